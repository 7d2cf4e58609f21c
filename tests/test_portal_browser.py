"""The tenant portal in a real browser: Playwright driving Debian's Chromium.

The API runs in the test's event loop (aiohttp TestServer on a loopback port) and so
does Playwright's async client, so they never fight over loops. Delivery tests run a
real router and deliverer against the embedded broker. The screenshots of the main
pages in docs/portal/ are made here.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from api.app import create_app
from dispatcher.kafka.producer import Producer
from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.failure import clean_backlog
from tests.support.pipeline import (
    create_webhook,
    ensure_mirror_topics,
    running,
    wait_until,
)
from tests.support.receiver import Received, Receiver

CHROMIUM = "/usr/bin/chromium"
if not os.path.exists(CHROMIUM):
    pytest.skip(
        f"no Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run does)",
        allow_module_level=True,
    )

from playwright.async_api import Browser, Page, async_playwright, expect  # noqa: E402

pytestmark = pytest.mark.usefixtures(clean_backlog.__name__)
# Generous: two shared cores also run the broker, Postgres and other suites.
expect.set_options(timeout=20_000)

TOPIC = "NEXUS.THRESHOLD.STATE.ALERT"
# `make screenshots` sets this to docs/portal; otherwise the pages are still captured
# (rendering must work) but the committed PNGs are left alone.
SHOTS = os.environ.get("PORTAL_SCREENSHOTS")
VIEWPORT = {"width": 1100, "height": 720}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        await launched.close()


@asynccontextmanager
async def portal(settings: Settings) -> AsyncIterator[TestServer]:
    """The whole API app on a loopback port."""
    server = TestServer(create_app(settings), host="127.0.0.1")
    await server.start_server()
    try:
        yield server
    finally:
        await server.close()


async def link(server: TestServer, tenant: TenantKey) -> str:
    """A one-time portal link, the way the operator's backend gets one."""
    async with (
        aiohttp.ClientSession() as session,
        session.post(server.make_url("/portal/sessions"), headers=tenant.headers) as response,
    ):
        assert response.status == 201
        url: str = (await response.json())["url"]
        return url


async def signed_in_page(browser: Browser, server: TestServer, tenant: TenantKey) -> Page:
    """A fresh browser context that opened a portal link (landed on the webhooks page)."""
    context = await browser.new_context(viewport=VIEWPORT)  # type: ignore[arg-type]
    page = await context.new_page()
    await page.goto(await link(server, tenant))
    await expect(page.get_by_role("heading", name="Webhooks", exact=True)).to_be_visible()
    return page


async def shot(page: Page, name: str, full_page: bool = False) -> None:
    """Capture the visible (or whole) page; saved as ``$PORTAL_SCREENSHOTS/<name>.png`` when set."""
    if SHOTS is None:
        assert await page.screenshot(full_page=full_page)
        return
    # Playwright makes the folder.
    await page.screenshot(path=Path(SHOTS) / f"{name}.png", full_page=full_page)


async def fill_create_form(page: Page, url: str, name: str) -> None:
    """From the webhooks page: "Create webhook", then fill URL, Topics and Name."""
    await page.get_by_role("link", name="Create webhook").click()
    await page.get_by_label("URL").fill(url)
    await page.get_by_label("Topics").select_option(TOPIC)
    await page.get_by_label("Name").fill(name)


@asynccontextmanager
async def pipeline(settings: Settings) -> AsyncIterator[None]:
    """A real router and deliverer for the test."""
    await ensure_mirror_topics(settings, [TOPIC])
    async with running(settings):
        yield


async def publish(settings: Settings, tenant_id: str, n: int) -> str:
    async with Producer(settings) as producer:
        return await producer.publish(TOPIC, {"state": "TX", "n": n}, tenant_id=tenant_id)


async def test_link_opens_the_tenants_webhooks(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant, other_tenant
) -> None:
    """Opening a link shows the tenant's webhooks (by name) and none of another tenant's."""
    await create_webhook(pool, settings, tenant.id, "https://orders.example.com/hooks", [TOPIC])
    await pool.execute(
        "UPDATE webhooks SET name = 'orders-hook', last_success_at = now() WHERE tenant_id = $1",
        tenant.id,
    )
    failing = await create_webhook(pool, settings, tenant.id, "https://pay.example.com/in", [TOPIC])
    await pool.execute(
        "UPDATE webhooks SET name = 'payments-hook', failing_since = now() - interval '2 hours',"
        " consecutive_failures = 14, last_success_at = now() - interval '3 hours'"
        " WHERE id = $1::uuid",
        failing.id,
    )
    await create_webhook(pool, settings, other_tenant.id, "https://other.example/x", [TOPIC])
    await pool.execute(
        "UPDATE webhooks SET name = 'foreign-hook' WHERE tenant_id = $1", other_tenant.id
    )
    async with portal(settings) as server:
        page = await signed_in_page(browser, server, tenant)
        assert page.url.endswith("/portal/webhooks")
        await expect(page.get_by_role("link", name="orders-hook")).to_be_visible()
        payments = page.get_by_role("row").filter(has_text="payments-hook")
        await expect(payments).to_contain_text("14 consecutive failures")
        await expect(page.get_by_role("link", name="foreign-hook")).to_have_count(0)
        await shot(page, "webhooks")


async def test_expired_or_reused_link_is_refused(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant
) -> None:
    """A used link and an expired link both show the refusal and sign nobody in."""
    async with portal(settings) as server:
        used = await link(server, tenant)
        first = await (await browser.new_context()).new_page()
        await first.goto(used)
        page = await (await browser.new_context()).new_page()
        response = await page.goto(used)
        assert response is not None and response.status == 403
        await expect(page.get_by_text("expired or was already used")).to_be_visible()

        expired = await link(server, tenant)
        await pool.execute(
            "UPDATE portal_links SET expires_at = now() - interval '1 second'"
            " WHERE tenant_id = $1 AND used_at IS NULL",
            tenant.id,
        )
        response = await page.goto(expired)
        assert response is not None and response.status == 403
        response = await page.goto(server.make_url("/portal/webhooks").human_repr())
        assert response is not None and response.status == 401


async def test_created_webhook_receives_the_next_event(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant
) -> None:
    """Create through the form; the next published event arrives at the new endpoint."""
    async with Receiver() as rx, portal(settings) as server, pipeline(settings):
        page = await signed_in_page(browser, server, tenant)
        await fill_create_form(page, rx.url, "billing-events")
        await shot(page, "create")
        await page.get_by_role("button", name="Create", exact=True).click()
        await expect(page.get_by_role("heading", name="billing-events")).to_be_visible()
        secret = await page.locator("#secret-value").text_content()
        assert secret is not None and secret.startswith("whsec_")
        await shot(page, "created")

        event_id = await publish(settings, tenant.id, 1)
        await wait_until(lambda: event_id in rx.event_ids(), message="the event at the receiver")

        async def logged() -> bool:
            found = await pool.fetchval(
                "SELECT count(*) FROM attempts WHERE event_id = $1", event_id
            )
            return bool(found)

        await wait_until(logged, message="the attempt in the log")  # written in batches
        await page.reload()
        rows = page.get_by_role("table", name="Attempts").get_by_role("row")
        await expect(rows.filter(has_text=event_id)).to_contain_text("200")
        assert secret not in await page.content()


async def test_send_test_event_shows_status_200(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant
) -> None:
    """ "Send test event" shows the outcome (status 200) and logs the attempt."""
    async with Receiver() as rx, portal(settings) as server:
        await create_webhook(pool, settings, tenant.id, rx.url, [TOPIC])
        await pool.execute("UPDATE webhooks SET name = 'ledger' WHERE tenant_id = $1", tenant.id)
        page = await signed_in_page(browser, server, tenant)
        await page.get_by_role("link", name="ledger").click()
        await expect(page.get_by_role("heading", name="ledger", exact=True)).to_be_visible()
        for name in ("Send test event", "Rotate secret", "Delete"):
            await expect(page.get_by_role("button", name=name, exact=True)).to_be_visible()
        await page.get_by_role("button", name="Send test event").click()
        outcome = page.get_by_role("status").filter(has_text="Test event delivered")
        await expect(outcome.locator(".status")).to_have_text("200")
        await expect(page.get_by_role("table", name="Attempts")).to_contain_text("200")
        await shot(page, "webhook")
        assert len(rx.requests) == 1


async def test_failing_attempts_show_status_and_error_and_retry_delivers(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant
) -> None:
    """A failing endpoint's attempts show 503, its error and the attempt's detail; Retry
    delivers once it is back."""
    short = settings.replace(retry_schedule=(0.05, 0.1, 0.2, 0.5), park_after=1.0, retry_window=2.5)
    answer = {"status": 503}

    def respond(request: Received) -> int:
        return answer["status"]

    async with Receiver(respond) as rx, portal(short) as server, pipeline(short):
        hook = await create_webhook(pool, short, tenant.id, rx.url, [TOPIC])
        await pool.execute("UPDATE webhooks SET name = 'flaky' WHERE tenant_id = $1", tenant.id)
        event_id = await publish(short, tenant.id, 7)

        async def failed_for_good() -> bool:
            count = await pool.fetchval(
                "SELECT count(*) FROM failed_deliveries WHERE webhook_id = $1::uuid", hook.id
            )
            return bool(count == 1)

        await wait_until(failed_for_good, within=60, message="the delivery to fail for good")
        page = await signed_in_page(browser, server, tenant)
        await page.goto(server.make_url(f"/portal/webhooks/{hook.id}").human_repr())
        table = page.get_by_role("table", name="Attempts")
        failed_rows = table.get_by_role("row").filter(has_text=event_id)
        await expect(failed_rows.first).to_contain_text("503")
        await expect(failed_rows.first).to_contain_text("HTTP 503")
        await shot(page, "attempts")

        await failed_rows.first.get_by_role("link", name="Details").click()
        await expect(page.get_by_text(re.compile(r"HTTP 503"))).to_be_visible()
        await expect(page.locator("pre.body").first).to_contain_text(event_id)
        await expect(page.locator("dd.error-class")).to_have_text("HTTPStatus")
        response_headers = page.get_by_role("table", name="Response headers")
        await expect(response_headers).to_contain_text("Content-Length")
        await expect(page.get_by_role("table", name="Request headers")).to_contain_text(
            "(signature: not shown)"
        )
        await shot(page, "attempt", full_page=True)  # the response is below the request
        await page.go_back()

        answer["status"] = 200
        before = time.time()
        await failed_rows.first.get_by_role("button", name="Retry").click()
        await expect(page.get_by_text("queued for redelivery")).to_be_visible()

        def delivered() -> bool:
            return any(r.event_id == event_id and r.received_at >= before for r in rx.requests)

        await wait_until(delivered, within=60, message="the retried delivery")


async def test_another_tenants_webhook_id_is_a_404_page(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant, other_tenant
) -> None:
    """Another tenant's webhook id in the URL answers the portal's 404 page."""
    foreign = await create_webhook(pool, settings, other_tenant.id, "https://x.example/", [TOPIC])
    async with portal(settings) as server:
        page = await signed_in_page(browser, server, tenant)
        response = await page.goto(server.make_url(f"/portal/webhooks/{foreign.id}").human_repr())
        assert response is not None and response.status == 404
        await expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        await expect(page.get_by_text("no such webhook")).to_be_visible()


async def test_form_post_without_csrf_token_is_refused(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant
) -> None:
    """The create form with its CSRF field removed is refused and creates nothing."""
    async with portal(settings) as server:
        page = await signed_in_page(browser, server, tenant)
        await fill_create_form(page, "https://example.com/hook", "csrf-probe")
        await page.locator("form.stacked input[name=csrf_token]").evaluate("e => e.remove()")
        await page.get_by_role("button", name="Create", exact=True).click()
        await expect(page.get_by_role("heading", name="Refused")).to_be_visible()
        count = await pool.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant.id)
        assert count == 0


async def test_topics_page_shows_the_catalog(
    browser: Browser, settings: Settings, pool: asyncpg.Pool, tenant
) -> None:
    """The Topics page shows each topic with its schema and example payload."""
    async with portal(settings) as server:
        page = await signed_in_page(browser, server, tenant)
        await page.get_by_role("link", name="Topics").click()
        await expect(page.get_by_role("heading", name=TOPIC)).to_be_visible()
        await shot(page, "topics")
