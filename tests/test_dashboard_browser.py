"""The dashboard in headless Chromium (Debian's `chromium`, driven by Playwright): token entry,
creating and starting a campaign in the page and watching its bar reach 100% over the live
stream, then pause, resume and cancel on a slow one. Then `/docs`, the API reference that
Swagger UI renders from `/openapi.json`. Leaves screenshots in tests/artifacts/.

The daemon runs in this trio run. Playwright drives the browser from a child process
(`python -m tests.test_dashboard_browser MODE URL TOKEN PNG`, MODE one of the drivers at the
end): its synchronous API runs an asyncio loop of its own, which must not meet the trio-asyncio
loop policy of this process. tests/test_dashboard_tools_browser.py drives the same way, with the
helpers here.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

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
DRIVERS = "tests.test_dashboard_browser"  # this module, run as the driver process

# Every browser test file's marks (tests/test_dashboard_tools_browser.py too).
BROWSER_MARKS = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian chromium is not installed at /usr/bin/chromium (apt-get install chromium)",
    ),
]
pytestmark = BROWSER_MARKS


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
    """A dashboard page that asked for the token, took it and is live on the stream."""
    from playwright.sync_api import expect

    page = browser.new_page(viewport={"width": 1100, "height": height})
    page.goto(url + "/")
    expect(page.locator("#login")).to_be_visible(timeout=STEP_MS)
    expect(page.locator("#vendor-missing")).to_be_hidden()
    page.fill("#token-input", token)
    page.click("#token-form button[type=submit]")
    expect(page.locator("#connection")).to_have_text("live", timeout=STEP_MS)
    return page


def says_what_to_do_without(browser: Browser, page_url: str, vendored: str) -> None:
    """Without the vendored `vendored` (a path under /static/vendor/) the page at
    `page_url` says to run `make install`."""
    from playwright.sync_api import expect

    bare = browser.new_page()
    bare.route(f"**/static/vendor/{vendored}", lambda route: route.abort())
    bare.goto(page_url)
    expect(bare.locator("#vendor-missing")).to_be_visible(timeout=STEP_MS)
    expect(bare.locator("#vendor-missing")).to_contain_text("make install")
    bare.close()


def create_draft(page: Page, name: str, per_minute: int) -> str:
    """Create a manual campaign `name` in the form; its id once its draft card shows."""
    from playwright.sync_api import expect

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


def add_variant(page: Page, index: int, name: str, text: str, weight: str | None = None) -> None:
    """Add row `index` of the form's variants."""
    page.click("#add-variant")
    row = page.locator("#variant-rows .variant-row").nth(index)
    row.locator(".variant-name").fill(name)
    row.locator(".variant-text").fill(text)
    if weight is not None:
        row.locator(".variant-weight").fill(weight)


def save_screenshot(page: Page, screenshot: Path) -> None:
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot), full_page=True)


def drive_dashboard(url: str, token: str, screenshot: Path) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        # Without the vendored Socket.IO client the page says what to do.
        says_what_to_do_without(browser, url + "/", "socket.io.min.js")

        page = signed_in(browser, url, token, height=1100)
        expect(page.locator("#account option")).to_have_count(1)

        # A fast campaign: start it from its card, the bar fills to 100%.
        fast = create_draft(page, "Browser fast", 6000)
        card = page.locator(f'.campaign[data-id="{fast}"]')
        card.locator("button[data-action=start]").click()
        expect(card.locator(".bar")).to_have_attribute("aria-valuenow", "100", timeout=STEP_MS)
        expect(card).to_have_attribute("data-status", "completed", timeout=STEP_MS)
        expect(card.locator(".count-sent dd")).to_contain_text("39")  # +17770000000 fails

        # A slow one: pause, resume and cancel with the buttons.
        slow = create_draft(page, "Browser slow", 30)
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
        save_screenshot(page, screenshot)

        card.locator("button[data-action=cancel]").click()
        expect(card).to_have_attribute("data-status", "cancelled", timeout=STEP_MS)


def drive_docs(url: str, token: str, screenshot: Path) -> None:
    from playwright.sync_api import expect

    with chromium() as browser:
        # Without the vendored Swagger UI the page says what to do.
        says_what_to_do_without(browser, url + "/docs", "swagger-ui-bundle.js")

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
        save_screenshot(page, screenshot)


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
        save_screenshot(page, screenshot)


def drive_variants(url: str, token: str, screenshot: Path) -> None:
    """A campaign with two variants created in the form and sent: its card shows a row per
    variant with its counts; a draft with a sample shows its A/B test's phase."""
    from playwright.sync_api import expect

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
        save_screenshot(page, screenshot)


def _operation_count(url: str) -> int:
    import json
    import urllib.request

    with urllib.request.urlopen(url + "/openapi.json", timeout=10) as response:
        document = json.load(response)
    return sum(len(item) for item in document["paths"].values())


def require_vendored(*paths: Path) -> None:
    for path in paths:
        assert path.exists(), f"{path} is missing: run `make install` (npm ci + copy)"


async def drive_in_child(
    module: str, mode: str, daemon_url: str, token: str, screenshot: Path, *extra: str
) -> None:
    """Run `module`'s driver `mode` in a child process (see above); it must succeed and
    leave its screenshot."""
    driver = await trio.run_process(
        [sys.executable, "-m", module, mode, daemon_url, token, str(screenshot), *extra],
        cwd=ROOT, check=False, capture_stdout=True, stderr=subprocess.STDOUT,
    )  # fmt: skip
    assert driver.returncode == 0, driver.stdout.decode(errors="replace")
    assert (await trio.Path(screenshot).stat()).st_size > 10_000


async def drive_with_contacts(
    database_url: str,
    mode: str,
    contacts: int,
    png: str,
    *,
    module: str = DRIVERS,
) -> None:
    """`module`'s drive `mode` against a daemon with one account and `contacts` contacts."""
    from tests.test_watch import running_daemon  # not in the driver process: see above

    require_vendored(VENDOR_JS)
    with trio.fail_after(180):
        async with running_daemon(database_url) as daemon:
            await daemon.make_account()
            await daemon.make_contacts(contacts)
            await drive_in_child(module, mode, daemon.url, daemon.token, ARTIFACTS / png)


@pytest.mark.parametrize(
    ("mode", "contacts", "png"),
    [
        pytest.param(
            "dashboard", 40, "dashboard.png", id="creates, starts, pauses, resumes and cancels"
        ),
        pytest.param("variants", 20, "dashboard-ab.png", id="with variants, a row for each"),
        pytest.param(
            "window", 5, "dashboard-window.png", id="with a closed send window, shows the wait"
        ),
    ],
)
async def test_dashboard_creates_a_campaign_and_shows_it(
    database_url: str, mode: str, contacts: int, png: str
) -> None:
    """What each drive checks is said in its driver: drive_dashboard, drive_variants,
    drive_window."""
    await drive_with_contacts(database_url, mode, contacts, png)


async def test_docs_renders_every_operation_of_the_openapi_document(database_url: str) -> None:
    from tests.test_watch import running_daemon

    require_vendored(*SWAGGER_UI)
    with trio.fail_after(120):
        async with running_daemon(database_url) as daemon:
            await drive_in_child(DRIVERS, "docs", daemon.url, daemon.token, ARTIFACTS / "docs.png")


async def test_dashboard_shows_the_account_event_log_and_the_cost(database_url: str) -> None:
    from tests.test_watch import running_daemon

    require_vendored(VENDOR_JS)
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
            await drive_in_child(
                DRIVERS,
                "events",
                daemon.url,
                daemon.token,
                ARTIFACTS / "dashboard-events.png",
                daemon.stack.simulator.url,
                "Template launch",
            )


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
        save_screenshot(page, screenshot)


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
        save_screenshot(page, screenshot)


async def test_dashboard_creates_a_campaign_with_variants_a_window_and_tracked_links(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import re

    from engine.transport.http1 import HTTPConnection, split_url
    from tests import test_watch
    from tests.test_demo import read_until

    require_vendored(VENDOR_JS)
    base = "https://go.example"  # what recipients would reach; the test asks the daemon itself
    monkeypatch.setitem(test_watch.ENVIRONMENT, "CAMPAIGN_ENGINE_LINKS_BASE_URL", base)
    png = ARTIFACTS / "dashboard-links.png"
    with trio.fail_after(180):
        async with test_watch.running_daemon(database_url) as daemon:
            await daemon.make_account()
            await daemon.make_contacts(5)
            driver = await trio.lowlevel.open_process(
                [sys.executable, "-m", DRIVERS, "links", daemon.url,
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


def run_driver(drivers: dict[str, Callable[..., None]], argv: list[str]) -> None:
    """The child process: `argv` is MODE URL TOKEN PNG [EXTRA...]."""
    import asyncio

    # Playwright's own asyncio loop: the standard one, whatever was imported before.
    asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
    mode, url, token, screenshot, *extra = argv
    drivers[mode](url, token, Path(screenshot), *extra)


if __name__ == "__main__":
    run_driver(
        {
            "dashboard": drive_dashboard,
            "docs": drive_docs,
            "events": drive_events,
            "variants": drive_variants,
            "window": drive_window,
            "links": drive_links,
        },
        sys.argv[1:],
    )
