"""The dashboard's preview, test send and retarget in headless Chromium: a campaign's
card previews the Cloud API body, sends a test to a typed number (no recipient), and
after the campaign retargets its failed recipients into a new draft card.

As in tests/test_dashboard_browser.py (whose browser settings it shares), Playwright
drives the browser from a child process: `python -m tests.test_dashboard_tools_browser
URL TOKEN PNG`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import trio

from tests.test_dashboard_browser import (
    ARTIFACTS,
    CHROMIUM,
    ROOT,
    STEP_MS,
    VENDOR_JS,
    chromium,
    signed_in,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]


def drive_tools(url: str, token: str, screenshot: Path) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        page = signed_in(browser, url, token, height=1300)
        expect(page.locator("#account option")).to_have_count(1)

        page.fill("#name", "Browser tools")
        page.fill("#message", "Hello {{firstName}} from the browser")
        page.fill("#rate", "6000")
        page.check('input[name="schedule"][value="manual"]')
        page.click("#create")
        named = page.locator(".campaign", has=page.locator(".name", has_text="Browser tools"))
        expect(named).to_have_attribute("data-status", "draft", timeout=STEP_MS)
        card = page.locator(f'.campaign[data-id="{named.get_attribute("data-id")}"]')
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
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)


async def test_dashboard_previews_sends_a_test_and_retargets(database_url: str) -> None:
    from tests.test_watch import running_daemon  # not in the driver process

    assert VENDOR_JS.exists(), f"{VENDOR_JS} is missing: run `make install` (npm ci + copy)"
    png = ARTIFACTS / "dashboard-tools.png"
    with trio.fail_after(180):
        async with running_daemon(database_url) as daemon:
            await daemon.make_account()
            await daemon.make_contacts(5)
            driver = await trio.run_process(
                [sys.executable, "-m", "tests.test_dashboard_tools_browser", daemon.url,
                 daemon.token, str(png)],
                cwd=ROOT, check=False, capture_stdout=True, stderr=subprocess.STDOUT,
            )  # fmt: skip
            assert driver.returncode == 0, driver.stdout.decode(errors="replace")
    assert (await trio.Path(png).stat()).st_size > 10_000


if __name__ == "__main__":
    import asyncio

    # Playwright's own asyncio loop: the standard one, whatever was imported before.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    drive_tools(sys.argv[1], sys.argv[2], Path(sys.argv[3]))
