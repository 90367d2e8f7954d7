"""The dashboard's preview, test send and retarget in headless Chromium: a campaign's
card previews the Cloud API body, sends a test to a typed number (no recipient), and
after the campaign retargets its failed recipients into a new draft card.

As in tests/test_dashboard_browser.py (whose browser settings and helpers it shares),
Playwright drives the browser from a child process: `python -m
tests.test_dashboard_tools_browser tools URL TOKEN PNG`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from tests.test_dashboard_browser import (
    BROWSER_MARKS,
    STEP_MS,
    chromium,
    create_draft,
    drive_with_contacts,
    run_driver,
    save_screenshot,
    signed_in,
)

pytestmark = BROWSER_MARKS


def drive_tools(url: str, token: str, screenshot: Path) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        page = signed_in(browser, url, token, height=1300)
        expect(page.locator("#account option")).to_have_count(1)

        campaign_id = create_draft(page, "Browser tools", 6000)
        card = page.locator(f'.campaign[data-id="{campaign_id}"]')
        tools = card.locator(".tools")
        tools.locator("summary").click()
        expect(tools.locator(".retarget-row")).to_be_hidden()  # a draft sent nothing

        # The preview is the Cloud API body, rendered for a contact.
        tools.locator("button.preview").click()
        body = tools.locator(".preview-body")
        expect(body).to_contain_text('"messaging_product": "whatsapp"', timeout=STEP_MS)
        expect(body).to_contain_text("from the browser")
        expect(body).not_to_contain_text("{{")

        # A test send answers with the WhatsApp message id; a bad number is named.
        tools.locator(".test-phone").fill("+15550001111")
        tools.locator("button.send-test").click()
        expect(tools.locator(".tool-result")).to_contain_text(
            "Test message sent · wamid.", timeout=STEP_MS
        )
        tools.locator(".test-phone").fill("12345")
        tools.locator("button.send-test").click()
        expect(tools.locator(".tool-result")).to_contain_text("phone:", timeout=STEP_MS)
        expect(card.locator(".bar-label")).to_contain_text("0 recipients")

        # Sent (the simulator fails +17770000000), its failed recipient is retargeted.
        card.locator("button[data-action=start]").click()
        expect(card).to_have_attribute("data-status", "completed", timeout=STEP_MS)
        expect(card.locator(".count-failed dd")).to_contain_text("1", timeout=STEP_MS)
        tools.locator('button.retarget[data-audience="failed"]').click()
        expect(tools.locator(".tool-result")).to_contain_text(
            "Draft created: Browser tools (retarget: failed) · 1 recipients", timeout=STEP_MS
        )
        draft = page.locator(".campaign", has=page.locator(".name", has_text="(retarget: failed)"))
        expect(draft).to_have_attribute("data-status", "draft", timeout=STEP_MS)
        expect(draft.locator(".bar-label")).to_contain_text("1 recipients")
        save_screenshot(page, screenshot)


async def test_dashboard_previews_sends_a_test_and_retargets(database_url: str) -> None:
    await drive_with_contacts(
        database_url, "tools", 5, "dashboard-tools.png", module="tests.test_dashboard_tools_browser"
    )


if __name__ == "__main__":
    run_driver({"tools": drive_tools}, sys.argv[1:])
