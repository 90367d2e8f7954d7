"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright): token entry,
creating and starting a campaign in the page and watching its bar reach 100% over the live
stream, then pause, resume and cancel on a slow one. Then `/docs`, the API reference that
Swagger UI renders from `/openapi.json`. Leaves screenshots in tests/artifacts/.

The daemon runs in this trio run. Playwright drives the browser from a child process
(`python -m tests.test_dashboard_browser dashboard|docs URL TOKEN PNG`): its synchronous API runs
an asyncio loop of its own, which must not meet the trio-asyncio loop policy of this process.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
VENDOR = ROOT / "api/static/vendor"
VENDOR_JS = VENDOR / "socket.io.min.js"
SWAGGER_UI = (VENDOR / "swagger-ui-bundle.js", VENDOR / "swagger-ui.css")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
STEP_MS = 30_000  # Playwright's bound on each wait

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's Chromium, headless, for one drive (in the Playwright child process)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            browser.close()


def signed_in(browser: Browser, url: str, token: str, *, height: int) -> Page:
    """A dashboard page that took the token and is live on the stream."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1100, "height": height})
    page.goto(url + "/")
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#connection")).to_have_text("live", timeout=STEP_MS)
    return page


def drive_dashboard(url: str, token: str, screenshot: Path) -> None:
    from playwright.sync_api import expect

    def create(page: Page, name: str, per_minute: int) -> str:
        page.fill("#name", name)
        page.fill("#message", "Hello {{firstName}} from the browser")
        page.fill("#rate", str(per_minute))
        page.check('input[name="schedule"][value="manual"]')
        page.click("#create")
        card = page.locator(".campaign", has=page.locator(".name", has_text=name))
        expect(card).to_have_attribute("data-status", "draft", timeout=STEP_MS)
        campaign_id = card.get_attribute("data-id")
        assert campaign_id
        return campaign_id

    with chromium() as browser:
        # Without the vendored Socket.IO client the page says what to do.
        bare = browser.new_page()
        bare.route("**/static/vendor/socket.io.min.js", lambda route: route.abort())
        bare.goto(url + "/")
        expect(bare.locator("#vendor-missing")).to_be_visible(timeout=STEP_MS)
        expect(bare.locator("#vendor-missing")).to_contain_text("make install")
        bare.close()

        page = browser.new_page(viewport={"width": 1100, "height": 1100})
        page.goto(url + "/")
        expect(page.locator("#login")).to_be_visible(timeout=STEP_MS)
        expect(page.locator("#vendor-missing")).to_be_hidden()
        page.fill("#token-input", token)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#connection")).to_have_text("live", timeout=STEP_MS)
        expect(page.locator("#account option")).to_have_count(1)

        # A fast campaign: start it from its card, the bar fills to 100%.
        fast = create(page, "Browser fast", 6000)
        card = page.locator(f'.campaign[data-id="{fast}"]')
        card.locator("button[data-action=start]").click()
        expect(card.locator(".bar")).to_have_attribute("aria-valuenow", "100", timeout=STEP_MS)
        expect(card).to_have_attribute("data-status", "completed", timeout=STEP_MS)
        expect(card.locator(".count-sent dd")).to_contain_text("39")  # +17770000000 fails

        # A slow one: pause, resume and cancel with the buttons.
        slow = create(page, "Browser slow", 30)
        card = page.locator(f'.campaign[data-id="{slow}"]')
        card.locator("button[data-action=start]").click()
        expect(card).to_have_attribute("data-status", "running", timeout=STEP_MS)
        card.locator("button[data-action=pause]").click()
        expect(card).to_have_attribute("data-status", "paused", timeout=STEP_MS)
        expect(card.locator(".status")).to_have_text("paused")
        card.locator("button[data-action=resume]").click()
        expect(card).to_have_attribute("data-status", "running", timeout=STEP_MS)
        expect(card.locator("button[data-action=pause]")).to_be_visible()

        # The token survives a reload (localStorage): no second prompt.
        page.reload()
        expect(page.locator("#connection")).to_have_text("live", timeout=STEP_MS)
        expect(page.locator("#login")).to_be_hidden()
        card = page.locator(f'.campaign[data-id="{slow}"]')
        expect(card).to_have_attribute("data-status", "running", timeout=STEP_MS)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)

        card.locator("button[data-action=cancel]").click()
        expect(card).to_have_attribute("data-status", "cancelled", timeout=STEP_MS)


def drive_docs(url: str, token: str, screenshot: Path) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        # Without the vendored Swagger UI the page says what to do.
        bare = browser.new_page()
        bare.route("**/static/vendor/swagger-ui-bundle.js", lambda route: route.abort())
        bare.goto(url + "/docs")
        expect(bare.locator("#vendor-missing")).to_be_visible(timeout=STEP_MS)
        expect(bare.locator("#vendor-missing")).to_contain_text("make install")
        bare.close()

        page = browser.new_page(viewport={"width": 1100, "height": 1400})
        page.goto(url + "/docs")
        expect(page.locator("#vendor-missing")).to_be_hidden()
        # Rendered from /openapi.json: the title, and one block per operation.
        expect(page.locator(".information-container .title")).to_contain_text(
            "Campaign engine", timeout=STEP_MS
        )
        create = page.locator(".opblock-post", has=page.locator('[data-path="/api/v1/campaigns"]'))
        expect(create).to_have_count(1)
        health = page.locator(".opblock-get", has=page.locator('[data-path="/healthz"]'))
        expect(health).to_have_count(1)
        expect(page.locator(".opblock")).to_have_count(_operation_count(url))

        # Expanded, the operation shows its request body; "Try it out" with the token
        # sends a real request from the page.
        create.locator(".opblock-summary").click()
        expect(create.locator(".opblock-section-request-body")).to_be_visible()
        page.click(".auth-wrapper .authorize")
        page.fill(".auth-container input", token)
        page.click(".auth-btn-wrapper .authorize")
        page.click(".auth-btn-wrapper .btn-done")
        listing = page.locator(".opblock-get", has=page.locator('[data-path="/api/v1/campaigns"]'))
        listing.locator(".opblock-summary").click()
        listing.locator(".try-out__btn").click()
        listing.locator(".execute").click()
        expect(
            listing.locator(".live-responses-table td.response-col_status:not(.col_header)")
        ).to_contain_text("200", timeout=STEP_MS)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)


def drive_events(url: str, token: str, screenshot: Path, simulator_url: str, name: str) -> None:
    """The account event log: signals the simulator posts show up, with the campaigns they
    paused and resumed, and the campaign's cost by pricing category once it has sent."""
    import json
    import urllib.request

    from playwright.sync_api import expect

    def signal(route: str, body: dict[str, str]) -> None:
        request = urllib.request.Request(
            f"{simulator_url}/simulator/webhooks/{route}",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            assert json.load(response)["receiver_status"] == 200

    template = {"name": "promo", "language": "en_US"}
    with chromium() as browser:
        page = signed_in(browser, url, token, height=1300)
        expect(page.locator("#events-empty")).to_be_visible(timeout=STEP_MS)
        card = page.locator(".campaign", has=page.locator(".name", has_text=name))
        expect(card).to_have_attribute("data-status", "scheduled", timeout=STEP_MS)

        # WhatsApp pauses the template: the campaign pauses, the log says why.
        signal("template-status", template | {"event": "PAUSED", "reason": "LOW_QUALITY"})
        expect(card).to_have_attribute("data-status", "paused", timeout=STEP_MS)
        expect(card.locator(".error-text")).to_contain_text("promo (en_US)")
        paused = page.locator('#events .event[data-event="PAUSED"]')
        expect(paused).to_contain_text("template promo (en_US): LOW_QUALITY", timeout=STEP_MS)
        expect(paused).to_contain_text(f"paused {name}")

        # A quality update is only recorded: the log looks for new events every 5 s.
        signal("quality", {"phone_number_id": "4242", "event": "DOWNGRADE",
                           "current_limit": "TIER_250"})  # fmt: skip
        expect(page.locator('#events .event[data-event="DOWNGRADE"]')).to_contain_text(
            "limit TIER_250", timeout=STEP_MS
        )

        # Approved again: the campaign resumes and sends; its cost shows by category.
        signal("template-status", template | {"event": "APPROVED"})
        approved = page.locator('#events .event[data-event="APPROVED"]')
        expect(approved).to_contain_text(f"resumed {name}", timeout=STEP_MS)
        expect(page.locator("#events .event")).to_have_count(3)
        expect(card).to_have_attribute("data-status", "completed", timeout=STEP_MS)
        card.locator(".show-cost").click()
        expect(card.locator(".pricing .pricing-marketing")).to_contain_text(
            "4 messages, 4 billable",
            timeout=STEP_MS,  # +17770000000 fails
        )
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)


def drive_variants(url: str, token: str, screenshot: Path) -> None:
    """A campaign with two variants created in the form and sent: its card shows a row per
    variant with its counts; a draft with a sample shows its A/B test's phase."""
    from playwright.sync_api import expect

    def add_variant(page: Page, index: int, name: str, text: str, weight: str) -> None:
        page.click("#add-variant")
        row = page.locator("#variant-rows .variant-row").nth(index)
        row.locator(".variant-name").fill(name)
        row.locator(".variant-text").fill(text)
        row.locator(".variant-weight").fill(weight)

    with chromium() as browser:
        page = signed_in(browser, url, token, height=1300)
        expect(page.locator("#account option")).to_have_count(1)

        page.fill("#name", "Browser AB")
        page.fill("#message", "Hello {{firstName}}")
        page.fill("#rate", "6000")
        add_variant(page, 0, "Friendly", "Hi {{firstName}}!", "1")
        add_variant(page, 1, "Formal", "Dear {{firstName}}, news for you", "3")
        page.check('input[name="schedule"][value="now"]')
        page.click("#create")
        card = page.locator(".campaign", has=page.locator(".name", has_text="Browser AB"))
        expect(card).to_have_attribute("data-status", "completed", timeout=STEP_MS)
        rows = card.locator("table.variants tr.variant")
        expect(rows).to_have_count(2)
        expect(rows.nth(0).locator(".variant-name")).to_have_text("Friendly")
        expect(rows.nth(1).locator(".variant-name")).to_have_text("Formal")
        # Counted from the detail: no placeholder left once it is fetched.
        expect(card.locator("table.variants")).not_to_contain_text("…", timeout=STEP_MS)

        def column(index: int) -> int:
            cells = [rows.nth(i).locator("td").nth(index).inner_text() for i in (0, 1)]
            return sum(int(text.split()[0]) for text in cells)

        # Every recipient in one variant; all sent but +17770000000, which fails.
        assert (column(2), column(3)) == (20, 19)

        # A draft A/B test with a sample: its phase shows.
        page.fill("#name", "Browser AB sample")
        page.fill("#ab-sample", "0.2")
        page.select_option("#ab-metric", "reply_rate")
        page.check('input[name="schedule"][value="manual"]')
        page.click("#create")
        draft = page.locator(".campaign", has=page.locator(".name", has_text="Browser AB sample"))
        expect(draft).to_have_attribute("data-status", "draft", timeout=STEP_MS)
        expect(draft.locator(".ab-phase")).to_contain_text("not started")
        expect(draft.locator("table.variants tr.variant")).to_have_count(2)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)


def _operation_count(url: str) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/openapi.json", timeout=10) as response:
        document = json.load(response)
    return sum(len(item) for item in document["paths"].values())


async def _drive(mode: str, daemon_url: str, token: str, screenshot: Path, *extra: str) -> None:
    driver = await trio.run_process(
        [sys.executable, "-m", "tests.test_dashboard_browser", mode, daemon_url, token,
         str(screenshot), *extra],
        cwd=ROOT, check=False, capture_stdout=True, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert driver.returncode == 0, driver.stdout.decode(errors="replace")
    assert (await trio.Path(screenshot).stat()).st_size > 10_000


async def test_dashboard_creates_starts_pauses_and_resumes_campaigns(database_url: str) -> None:
    from tests.test_watch import running_daemon  # not in the driver process: see above

    assert VENDOR_JS.exists(), f"{VENDOR_JS} is missing: run `make install` (npm ci + copy)"
    with trio.fail_after(180):
        async with running_daemon(database_url) as daemon:
            await daemon.make_account()
            await daemon.make_contacts(40)
            await _drive("dashboard", daemon.url, daemon.token, ARTIFACTS / "dashboard.png")


async def test_docs_renders_every_operation_of_the_openapi_document(database_url: str) -> None:
    from tests.test_watch import running_daemon

    for path in SWAGGER_UI:
        assert path.exists(), f"{path} is missing: run `make install` (npm ci + copy)"
    with trio.fail_after(120):
        async with running_daemon(database_url) as daemon:
            await _drive("docs", daemon.url, daemon.token, ARTIFACTS / "docs.png")


async def test_dashboard_shows_the_account_event_log_and_the_cost(database_url: str) -> None:
    from tests.test_watch import running_daemon

    assert VENDOR_JS.exists(), f"{VENDOR_JS} is missing: run `make install` (npm ci + copy)"
    with trio.fail_after(180):
        async with running_daemon(database_url) as daemon:
            account = await daemon.call(
                "POST",
                "/api/v1/accounts",
                {
                    "name": "Signals",
                    "phoneNumberId": "4242",
                    "accessToken": "token",
                    "apiUrl": daemon.stack.simulator.api_url,
                    "businessAccountId": "WABA",  # the simulator's --waba-id
                },
            )
            await daemon.make_contacts(5)
            await daemon.call(
                "POST",
                "/api/v1/campaigns",
                {
                    "accountId": account["id"],
                    "name": "Template launch",
                    "messageType": "template",
                    "messageContent": {"name": "promo", "language": "en_US"},
                    "audienceType": "all",
                    "scheduleType": "scheduled",
                    "scheduledAt": "2099-01-01T00:00:00Z",
                    "throttleConfig": {"messagesPerMinute": 6000},
                },
            )
            await _drive(
                "events",
                daemon.url,
                daemon.token,
                ARTIFACTS / "dashboard-events.png",
                daemon.stack.simulator.url,
                "Template launch",
            )


async def _drive_with_contacts(database_url: str, mode: str, contacts: int, png: str) -> None:
    """`mode`'s drive against a daemon with one account and `contacts` contacts."""
    from tests.test_watch import running_daemon

    assert VENDOR_JS.exists(), f"{VENDOR_JS} is missing: run `make install` (npm ci + copy)"
    with trio.fail_after(180):
        async with running_daemon(database_url) as daemon:
            await daemon.make_account()
            await daemon.make_contacts(contacts)
            await _drive(mode, daemon.url, daemon.token, ARTIFACTS / png)


async def test_dashboard_creates_a_campaign_with_variants_and_shows_each(
    database_url: str,
) -> None:
    await _drive_with_contacts(database_url, "variants", 20, "dashboard-ab.png")


def drive_window(url: str, token: str, screenshot: Path) -> None:
    """A campaign created with a send window that is closed now: its card says it waits
    for the window and when it opens, and shows the window."""
    from datetime import UTC, datetime, timedelta

    from playwright.sync_api import expect

    now = datetime.now(UTC)
    start, end = (
        (now + timedelta(hours=2)).strftime("%H:%M"),
        (now + timedelta(hours=3)).strftime("%H:%M"),
    )
    with chromium() as browser:
        page = signed_in(browser, url, token, height=1300)
        expect(page.locator("#account option")).to_have_count(1)
        page.fill("#name", "Browser window")
        page.fill("#message", "Hello {{firstName}}")
        page.fill("#window-start", start)
        page.fill("#window-end", end)
        page.fill("#window-timezone", "UTC")
        page.check('input[name="schedule"][value="now"]')
        page.click("#create")
        card = page.locator(".campaign", has=page.locator(".name", has_text="Browser window"))
        wait = card.locator(".wait-text")
        expect(wait).to_contain_text(f"Send window {start} to {end} UTC", timeout=STEP_MS)
        expect(wait).to_contain_text("Waiting for the send window", timeout=STEP_MS)
        expect(card).to_have_attribute("data-status", "running")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)


async def test_dashboard_creates_a_campaign_with_a_send_window_and_shows_the_wait(
    database_url: str,
) -> None:
    await _drive_with_contacts(database_url, "window", 5, "dashboard-window.png")


def drive_links(url: str, token: str, screenshot: Path) -> None:
    """A campaign created with two variants, a send window open now in New York and tracked
    links: it sends (no wait for the window), its card has a row per variant; once the
    test follows one recipient's link (after SENT on stdout), the click rate shows, in the
    campaign's counts and in its variant's row. A click-rate winner without tracked links is
    refused in the form."""
    import re
    from datetime import UTC, datetime, timedelta
    from zoneinfo import ZoneInfo

    from playwright.sync_api import expect

    def add_variant(page: Page, index: int, name: str, text: str) -> None:
        page.click("#add-variant")
        row = page.locator("#variant-rows .variant-row").nth(index)
        row.locator(".variant-name").fill(name)
        row.locator(".variant-text").fill(text)

    local = datetime.now(UTC).astimezone(ZoneInfo("America/New_York"))
    start, end = (
        (local - timedelta(hours=1)).strftime("%H:%M"),
        (local + timedelta(hours=2)).strftime("%H:%M"),
    )
    with chromium() as browser:
        page = signed_in(browser, url, token, height=1500)
        expect(page.locator("#account option")).to_have_count(1)

        page.fill("#name", "Browser links")
        page.fill("#message", "Hello {{firstName}}: https://example.com/offer")
        page.fill("#rate", "6000")
        add_variant(page, 0, "Short", "Hi {{firstName}} https://example.com/offer?v=a")
        add_variant(page, 1, "Long", "Dear {{firstName}}, see https://example.com/offer?v=b")
        page.fill("#window-start", start)
        page.fill("#window-end", end)
        page.fill("#window-timezone", "America/New_York")
        page.check('input[name="schedule"][value="now"]')

        # Without trackLinks a click-rate winner is refused; the form says why.
        page.fill("#ab-sample", "0.5")
        page.select_option("#ab-metric", "click_rate")
        page.click("#create")
        result = page.locator("#create-result")
        expect(result).to_contain_text("trackLinks", timeout=STEP_MS)
        expect(result).to_have_class(re.compile("error-text"))
        expect(page.locator(".campaign")).to_have_count(0)

        page.fill("#ab-sample", "")
        page.check("#track-links")
        page.click("#create")
        expect(result).to_contain_text("Created", timeout=STEP_MS)
        card = page.locator(".campaign", has=page.locator(".name", has_text="Browser links"))
        expect(card).to_have_attribute("data-status", "completed", timeout=STEP_MS)
        wait = card.locator(".wait-text")
        expect(wait).to_have_text(f"Send window {start} to {end} America/New_York")
        rows = card.locator("table.variants tr.variant")
        expect(rows).to_have_count(2)
        expect(card.locator("table.variants")).not_to_contain_text("…", timeout=STEP_MS)
        expect(card.locator(".count-clicked dd")).to_have_text("0 0.00%")
        print("SENT", flush=True)  # the test follows a link now

        # One click of five recipients (one failed): a rate of 25% of those delivered,
        # or more while deliveries are still coming in.
        clicked = card.locator(".count-clicked dd")
        expect(clicked).to_have_text(re.compile(r"^1 [1-9]\d*\.\d\d%$"), timeout=STEP_MS)
        # The clicked recipient's variant counts it (the Clicked column), the other not.
        clicks = rows.locator("td:nth-child(8)")
        expect(clicks.filter(has_text=re.compile(r"^1 "))).to_have_count(1, timeout=STEP_MS)
        expect(clicks.filter(has_text=re.compile(r"^0 "))).to_have_count(1)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshot), full_page=True)


async def test_dashboard_creates_a_campaign_with_variants_a_window_and_tracked_links(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from engine.transport.http1 import HTTPConnection, split_url
    from tests import test_watch
    from tests.test_demo import read_until

    assert VENDOR_JS.exists(), f"{VENDOR_JS} is missing: run `make install` (npm ci + copy)"
    base = "https://go.example"  # what recipients would reach; the test asks the daemon itself
    monkeypatch.setitem(test_watch.ENVIRONMENT, "CAMPAIGN_ENGINE_LINKS_BASE_URL", base)
    png = ARTIFACTS / "dashboard-links.png"
    with trio.fail_after(180):
        async with test_watch.running_daemon(database_url) as daemon:
            await daemon.make_account()
            await daemon.make_contacts(5)
            driver = await trio.lowlevel.open_process(
                [sys.executable, "-m", "tests.test_dashboard_browser", "links", daemon.url,
                 daemon.token, str(png)],
                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            assert driver.stdout is not None
            output = bytearray()
            try:
                await read_until(driver.stdout, b"SENT\n", output)
                # What WhatsApp was asked to send: a recipient's own short link.
                sent = [r for r in daemon.stack.simulator.state.requests if r.error_code is None]
                found = re.search(re.escape(base) + r"/l/([\w-]+)", sent[0].body.decode())
                assert found, sent[0].body
                connection = HTTPConnection(split_url(daemon.url + "/")[0], read_timeout=10)
                try:
                    response = await connection.request("GET", f"/l/{found.group(1)}", [])
                finally:
                    await connection.aclose()
                assert response.status == 302
                location = dict(response.headers)[b"location"].decode()
                assert location.startswith("https://example.com/offer?v="), location
                while chunk := await driver.stdout.receive_some(65536):
                    output += chunk
                assert await driver.wait() == 0, output.decode(errors="replace")
            finally:
                if driver.returncode is None:
                    driver.kill()
                    await driver.wait()
    assert (await trio.Path(png).stat()).st_size > 10_000


if __name__ == "__main__":
    import asyncio

    # Playwright's own asyncio loop: the standard one, whatever was imported before.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    drivers: dict[str, Any] = {
        "dashboard": drive_dashboard,
        "docs": drive_docs,
        "events": drive_events,
        "variants": drive_variants,
        "window": drive_window,
        "links": drive_links,
    }
    drivers[sys.argv[1]](sys.argv[2], sys.argv[3], Path(sys.argv[4]), *sys.argv[5:])
