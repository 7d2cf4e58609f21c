"""The tenant portal over HTTP: links, cookies, CSRF, headers, secrets, shared rules."""

from __future__ import annotations

import dataclasses
import re
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from markupsafe import escape as html_escape
from yarl import URL

from api.auth import is_portal_page
from api.portal.pages import security_headers
from dispatcher.deliverer.attempt_log import AttemptLog
from dispatcher.delivery.http.ssrf import InvalidTarget, check_target_url
from dispatcher.settings import Settings
from dispatcher.store import events as event_store
from dispatcher.store import failed_deliveries
from dispatcher.store.attempt_store import record_one
from dispatcher.store.portal import hash_token
from tests.conftest import TenantKey
from tests.support.api import TOPIC, api_client, assert_matches, webhook_body
from tests.support.failure import make_result, make_task, make_webhook
from tests.support.portal import portal_client, portal_link, sign_in

SECRET_LIKE = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")
# An attempt's event id: a link to the event's page (a plain span for test events).
EVENT = re.compile(r'<(?:span|a) class="muted"[^>]*>(e\d\d)</(?:span|a)>')
T0 = 1_700_000_000.0


async def test_portal_sessions_answers_a_one_time_link(settings: Settings, pool, tenant) -> None:
    """POST /portal/sessions → 201 {url, expires_at}; only the token's hash is stored."""
    async with api_client(settings) as client:
        response = await client.post("/portal/sessions", headers=tenant.headers)
        assert response.status == 201
        body = await response.json()
    assert_matches("PortalSession", body)
    token = body["url"].rsplit("/portal/login/", 1)[1]
    expires_at = datetime.fromisoformat(body["expires_at"].replace("Z", "+00:00"))
    left = (expires_at - datetime.now(UTC)).total_seconds()
    assert settings.portal_link_ttl - 60 < left <= settings.portal_link_ttl
    stored = await pool.fetch("SELECT token_hash FROM portal_links WHERE tenant_id = $1", tenant.id)
    assert [row["token_hash"] for row in stored] == [hash_token(token)]


async def test_portal_sessions_needs_an_api_key(settings: Settings) -> None:
    """Without a valid API key the link route answers the API's 401 envelope."""
    async with api_client(settings) as client:
        for headers in ({}, {"Authorization": "Bearer hl_nope"}):
            response = await client.post("/portal/sessions", headers=headers)
            assert response.status == 401
            assert (await response.json())["error"]["code"] == "unauthorized"


async def test_link_exchange_sets_a_strict_cookie_and_lands_on_webhooks(settings, tenant) -> None:
    """The cookie is HttpOnly, SameSite=Strict, /portal/-scoped, not Secure over plain HTTP."""
    async with portal_client(settings) as client:
        response = await client.get(await portal_link(client, tenant), allow_redirects=False)
        assert response.status == 200
        cookie = response.headers.getall("Set-Cookie")[0]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/portal/" in cookie
        assert "Secure" not in cookie
        page = await client.get("/portal/webhooks")
        assert page.status == 200
        assert "<h1>Webhooks</h1>" in await page.text()


async def test_cookie_is_secure_behind_an_https_proxy(settings, tenant) -> None:
    """X-Forwarded-Proto: https (a TLS-terminating proxy) adds the Secure flag."""
    async with portal_client(settings) as client:
        link = await portal_link(client, tenant)
        response = await client.get(link, headers={"X-Forwarded-Proto": "https"})
        assert "Secure" in response.headers.getall("Set-Cookie")[0]


@pytest.mark.parametrize("query", ["", "?next=https://evil.example/", "?redirect=//evil.example"])
async def test_link_exchange_has_no_open_redirect(settings, tenant, query) -> None:
    """Whatever the query says, the exchange lands on /portal/webhooks and nowhere else."""
    async with portal_client(settings) as client:
        link = await portal_link(client, tenant)
        response = await client.get(link + query, allow_redirects=False)
        html = await response.text()
    assert "Location" not in response.headers
    assert 'content="0; url=/portal/webhooks"' in html
    assert "evil" not in html


async def test_reused_and_expired_links_are_refused(settings, pool, tenant) -> None:
    """A link works once and only until it expires; refusals set no cookie."""
    async with portal_client(settings) as client:
        link = await portal_link(client, tenant)
        assert (await client.get(link)).status == 200
    async with portal_client(settings) as client:
        again = await client.get(link)
        assert again.status == 403
        assert "expired or was already used" in await again.text()
        assert "Set-Cookie" not in again.headers

        expired = await portal_link(client, tenant)
        token = expired.rsplit("/", 1)[1]
        await pool.execute(
            "UPDATE portal_links SET expires_at = now() - interval '1 second'"
            " WHERE token_hash = $1",
            hash_token(token),
        )
        refused = await client.get(expired)
        assert refused.status == 403
        assert (await client.get("/portal/webhooks")).status == 401


async def test_pages_need_a_session(settings) -> None:
    """Without the cookie (or with a made-up one) every page is the signed-out 401 page."""
    async with portal_client(settings) as client:
        for path in ("/portal/webhooks", "/portal/topics", "/portal/webhooks/new"):
            response = await client.get(path)
            assert response.status == 401
            assert "session has ended" in await response.text()
        client.session.cookie_jar.update_cookies({"hooklane_portal": "made-up"})
        assert (await client.get("/portal/webhooks")).status == 401


async def test_form_posts_without_the_csrf_token_are_refused(settings, pool, tenant) -> None:
    """A POST lacking the session's CSRF token is a 403 and changes nothing."""
    async with portal_client(settings) as client:
        csrf = await sign_in(client, tenant)
        form = {"url": "https://example.com/hook", "topics": TOPIC, "name": "csrf-probe"}
        for token in (None, "0" * 64):
            data = form if token is None else {**form, "csrf_token": token}
            response = await client.post("/portal/webhooks", data=data)
            assert response.status == 403
            assert "CSRF" in await response.text()
        count = await pool.fetchval("SELECT count(*) FROM webhooks WHERE tenant_id = $1", tenant.id)
        assert count == 0
        accepted = await client.post("/portal/webhooks", data={**form, "csrf_token": csrf})
        assert accepted.status == 201


async def test_every_page_sends_the_strict_headers(settings, tenant) -> None:
    """CSP default-src 'self' without inline script, no framing, no referrer, no caching."""
    async with portal_client(settings) as client:
        await sign_in(client, tenant)
        for path in ("/portal/webhooks", "/portal/topics", "/portal/webhooks/nope"):
            response = await client.get(path)
            csp = response.headers["Content-Security-Policy"]
            assert "default-src 'self'" in csp
            assert "script-src 'self';" in csp
            assert "unsafe-inline" not in csp
            assert "frame-ancestors 'none'" in csp
            assert response.headers["X-Frame-Options"] == "DENY"
            assert response.headers["Referrer-Policy"] == "no-referrer"
            assert response.headers["Cache-Control"] == "no-store"
            assert "<script>" not in await response.text()


@pytest.mark.parametrize(
    ("ancestors", "frame_ancestors", "x_frame_options"),
    [
        ("", "frame-ancestors 'none'", "DENY"),
        ("https://dash.example", "frame-ancestors https://dash.example", None),
        (
            "https://a.example https://b.example",
            "frame-ancestors https://a.example https://b.example",
            None,
        ),
    ],
)
def test_frame_ancestors_follow_the_setting(ancestors, frame_ancestors, x_frame_options) -> None:
    """HOOKLANE_PORTAL_FRAME_ANCESTORS lets the operator's origins embed the portal."""
    response = web.Response()
    security_headers(response, Settings(portal_frame_ancestors=ancestors))
    assert response.headers["Content-Security-Policy"].endswith(frame_ancestors)
    assert response.headers.get("X-Frame-Options") == x_frame_options


async def test_no_page_shows_the_secret_after_creation(settings, tenant) -> None:
    """The generated secret appears on the creation page only; rotation shows the new one once."""
    async with portal_client(settings) as client:
        csrf = await sign_in(client, tenant)
        form = {"url": "https://example.com/hook", "topics": TOPIC, "name": "once"}
        created = await client.post("/portal/webhooks", data={**form, "csrf_token": csrf})
        secrets = SECRET_LIKE.findall(await created.text())
        assert len(set(secrets)) == 1
        (secret,) = set(secrets)
        webhook_id = re.search(r"/portal/webhooks/([0-9a-f-]{36})/test", await created.text())
        assert webhook_id is not None
        base = f"/portal/webhooks/{webhook_id.group(1)}"
        rotated = await client.post(f"{base}/rotate", data={"csrf_token": csrf})
        new_secrets = set(SECRET_LIKE.findall(await rotated.text())) - {secret}
        assert len(new_secrets) == 1
        assert "24 hours" in await rotated.text()
        await client.post(f"{base}/test", data={"csrf_token": csrf})
        for path in ("/portal/webhooks", base, f"{base}/edit", f"{base}/delete", "/portal/topics"):
            html = await (await client.get(path)).text()
            assert SECRET_LIKE.search(html) is None, path


def portal_id_routes(app: web.Application) -> list[tuple[str, str]]:
    """Every (method, template) of a portal page that addresses a webhook; deletes last."""
    routes = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and is_portal_page(route.resource.canonical)
        and "{id}" in route.resource.canonical
        and route.method in {"GET", "POST"}
    }
    return sorted(routes, key=lambda r: (r[1].endswith("/delete") and r[0] == "POST", r))


async def test_another_tenants_webhook_is_a_404_page(settings, pool, tenant, other_tenant) -> None:
    """Every portal page and action of another tenant's webhook or attempt is the 404 page."""
    async with api_client(settings) as api:
        created = await api.post(
            "/webhooks", json=webhook_body("https://example.com/x"), headers=other_tenant.headers
        )
        foreign = (await created.json())["id"]
    log = AttemptLog(pool)
    log.record(make_result(foreign, other_tenant.id, status=503, event_id="e-foreign"))
    await log.flush()
    attempt_id = await pool.fetchval(
        "SELECT id::text FROM attempts WHERE webhook_id = $1::uuid", foreign
    )
    form = {"state": "DISABLED", "since": "2026-01-01T00:00", "url": "https://x.example/"}
    async with portal_client(settings) as client:
        routes = portal_id_routes(client.app)
        assert ("GET", "/portal/webhooks/{id}") in routes
        assert ("POST", "/portal/webhooks/{id}/attempts/{attempt_id}/retry") in routes
        for signed_in, expect_found in ((tenant, False), (other_tenant, True)):
            csrf = await sign_in(client, signed_in)
            for method, template in routes:
                path = template.format(id=foreign, attempt_id=attempt_id)
                data = {**form, "topics": TOPIC, "csrf_token": csrf} if method == "POST" else None
                response = await client.request(method, path, data=data)
                html = await response.text()
                hidden = response.status == 404 and re.search("no such (webhook|attempt)", html)
                assert bool(hidden) != expect_found, (signed_in.id, method, template)
    row = await pool.fetchrow("SELECT state FROM webhooks WHERE id = $1::uuid", foreign)
    assert row is None  # the owner's own delete (the control) went through, last


@pytest.mark.parametrize(
    ("form", "message"),
    [
        ({"url": "ftp://example.com/x", "topics": TOPIC}, "the URL must start with https://"),
        (
            {"url": "https://example.com/x", "topics": "NO.SUCH.TOPIC"},
            "unknown topic 'NO.SUCH.TOPIC'",
        ),
        ({"url": "https://example.com/x"}, "topics"),
    ],
)
async def test_form_errors_are_the_api_errors(settings, tenant, form, message) -> None:
    """The form is checked by the REST rules and says what the API would say (422, form kept)."""
    async with api_client(settings) as api:
        rest = await api.post(
            "/webhooks",
            json={**form, "topics": [form["topics"]] if "topics" in form else []},
            headers=tenant.headers,
        )
        assert rest.status == 422
        assert message in (await rest.json())["error"]["message"]
    async with portal_client(settings) as client:
        csrf = await sign_in(client, tenant)
        response = await client.post("/portal/webhooks", data={**form, "csrf_token": csrf})
        assert response.status == 422
        html = await response.text()
        assert str(html_escape(message)) in html
        assert form["url"] in html


async def test_blocked_targets_are_refused_like_the_api(settings: Settings, tenant) -> None:
    """With private targets off, a loopback URL is refused with the SSRF check's own message."""
    strict = dataclasses.replace(settings, allow_private_targets=False)
    url = "https://127.0.0.1/hook"
    with pytest.raises(InvalidTarget) as refused:
        await check_target_url(url, strict)
    async with portal_client(strict) as client:
        csrf = await sign_in(client, tenant)
        form = {"url": url, "topics": TOPIC, "csrf_token": csrf}
        response = await client.post("/portal/webhooks", data=form)
        assert response.status == 422
        assert str(html_escape(str(refused.value))) in await response.text()


async def test_edit_disable_and_delete(settings, pool, tenant) -> None:
    """Edit saves through the REST rules; Disable/Enable flip the state; Delete removes it."""
    async with portal_client(settings) as client:
        csrf = await sign_in(client, tenant)
        created = await client.post(
            "/portal/webhooks",
            data={"url": "https://example.com/a", "topics": TOPIC, "name": "a", "csrf_token": csrf},
        )
        found = re.search(r"/portal/webhooks/([0-9a-f-]{36})/test", await created.text())
        assert found is not None
        webhook_id = found.group(1)
        base = f"/portal/webhooks/{webhook_id}"
        edit = {"url": "https://example.com/b", "topics": TOPIC, "name": "b", "csrf_token": csrf}
        saved = await client.post(base, data=edit, allow_redirects=False)
        assert (saved.status, saved.headers["Location"]) == (303, base)
        await client.post(base + "/state", data={"state": "DISABLED", "csrf_token": csrf})
        row = await pool.fetchrow(
            "SELECT url, name, state FROM webhooks WHERE id = $1::uuid", webhook_id
        )
        assert dict(row) == {"url": "https://example.com/b", "name": "b", "state": "DISABLED"}
        deleted = await client.post(
            base + "/delete", data={"csrf_token": csrf}, allow_redirects=False
        )
        assert (deleted.status, deleted.headers["Location"]) == (303, "/portal/webhooks")
        assert (
            await pool.fetchval("SELECT count(*) FROM webhooks WHERE id = $1::uuid", webhook_id)
            == 0
        )
        assert (await client.get(base)).status == 404


async def test_topics_page_shows_schema_and_example(settings, tenant) -> None:
    """The catalog page lists each topic with its JSON Schema and an example payload."""
    async with portal_client(settings) as client:
        await sign_in(client, tenant)
        html = await (await client.get("/portal/topics")).text()
    assert TOPIC in html
    assert "JSON Schema" in html
    assert "Example payload" in html


async def test_cli_portal_link_signs_in(settings: Settings, tenant: TenantKey) -> None:
    """`hooklane portal-link TENANT` prints a one-time link that opens the portal."""
    from tests.test_cli import hooklane

    code, out, _ = await hooklane(settings, "portal-link", tenant.id)
    assert code == 0
    path = out.split()[0][out.index("/portal/") :]
    async with portal_client(settings) as client:
        assert (await client.get(path)).status == 200
        assert (await client.get("/portal/webhooks")).status == 200
    code, _, err = await hooklane(settings, "portal-link", "ten_missing")
    assert code == 1
    assert "no tenant 'ten_missing'" in err


async def test_attempts_are_filtered_and_paged(settings, pool, tenant) -> None:
    """The attempts table is newest first, filtered by outcome and paged with Older attempts."""
    webhook_id = await make_webhook(pool, tenant.id)
    log = AttemptLog(pool)
    for i in range(25):
        status = 200 if i % 2 else 503
        log.record(
            make_result(webhook_id, tenant.id, status=status, event_id=f"e{i:02}", at=T0 + i)
        )
    await log.flush()
    async with portal_client(settings) as client:
        await sign_in(client, tenant)
        base = f"/portal/webhooks/{webhook_id}"
        first = await (await client.get(base)).text()
        assert EVENT.findall(first)[:3] == ["e24", "e23", "e22"]
        assert len(EVENT.findall(first)) == 20
        older = re.search(r'href="([^"]*cursor=[^"]*)">Older attempts', first)
        assert older is not None
        rest = await (await client.get(older.group(1).replace("&amp;", "&"))).text()
        assert EVENT.findall(rest) == [f"e{i:02}" for i in range(4, -1, -1)]
        failed = await (await client.get(base, params={"outcome": "failure"})).text()
        events = EVENT.findall(failed)
        assert events[:2] == ["e24", "e22"]
        assert all(int(event[1:]) % 2 == 0 for event in events)
        assert failed.count(">Retry</button>") == len(events)
        bad = await client.get(base, params={"outcome": "maybe"})
        assert bad.status == 422
        assert "outcome must be success or failure" in await bad.text()


async def test_attempt_detail_shows_request_response_and_error(settings, pool, tenant) -> None:
    """The detail page: request headers (signatures masked), the body from the payload
    store, the response status, headers and body, and the error class and message."""
    webhook_id = await make_webhook(pool, tenant.id)
    event = make_task(webhook_id, tenant.id, 42).event
    # Delivered-or-not, the payload store keeps the event: not parked, not failed.
    assert await event_store.claim(pool, event, settings.dedup_window)
    result = dataclasses.replace(
        make_result(webhook_id, tenant.id, status=503, event_id=event.id, body="busy"),
        response_headers=(("Retry-After", "5"), ("X-Request-Id", "r-17")),
    )
    attempt_id = await record_one(pool, result)
    async with portal_client(settings) as client:
        await sign_in(client, tenant)
        page = await client.get(f"/portal/webhooks/{webhook_id}/attempts/{attempt_id}")
        assert page.status == 200
        html = await page.text()
    request_part, response_part = html.split("<h2>Response</h2>")
    assert "(signature: not shown)" in request_part and "webhook-signature" in request_part
    assert not SECRET_LIKE.search(html)
    assert event.id in request_part and "&#34;n&#34;: 42" in request_part  # the sent body
    assert re.search(r'class="status">503<', response_part)
    assert re.search(r"error-class\">HTTPStatus<", response_part)
    assert "HTTP 503" in response_part
    assert 'X-Request-Id</td><td class="mono">r-17' in response_part
    assert "busy" in response_part


async def test_recover_since_requeues_failed_deliveries(internal_topics, pool, tenant) -> None:
    """ "Recover since…" queues the failed deliveries again, through the REST code path."""
    webhook_id = await make_webhook(pool, tenant.id)
    for n in range(2):
        await failed_deliveries.record_failed(
            pool, make_task(webhook_id, tenant.id, n), tenant.id, "gave up"
        )
    since = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    async with portal_client(internal_topics) as client:
        csrf = await sign_in(client, tenant)
        base = f"/portal/webhooks/{webhook_id}"
        response = await client.post(f"{base}/recover", data={"since": since, "csrf_token": csrf})
        assert response.status == 200
        assert "2 failed deliveries queued again" in await response.text()
        bad = await client.post(f"{base}/recover", data={"since": "soon", "csrf_token": csrf})
        assert bad.status == 422
    left = await pool.fetchval(
        "SELECT count(*) FROM failed_deliveries WHERE webhook_id = $1::uuid", webhook_id
    )
    assert left == 0


async def test_sign_out_ends_the_session(settings, pool, tenant) -> None:
    """Sign out deletes the session row; the old cookie no longer opens any page."""
    async with portal_client(settings) as client:
        csrf = await sign_in(client, tenant)
        stolen = client.session.cookie_jar.filter_cookies(client.make_url("/portal/"))
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM portal_sessions WHERE tenant_id = $1", tenant.id
            )
            == 1
        )
        response = await client.post("/portal/logout", data={"csrf_token": csrf})
        assert response.status == 200
        assert "You are signed out" in await response.text()
        client.session.cookie_jar.update_cookies(stolen)
        assert (await client.get("/portal/webhooks")).status == 401
    count = await pool.fetchval(
        "SELECT count(*) FROM portal_sessions WHERE tenant_id = $1", tenant.id
    )
    assert count == 0


@pytest.mark.parametrize(
    "path", ["/portal/../webhooks", "/portal/..%2Fwebhooks", "/portal/%2e%2e/topics"]
)
async def test_portal_paths_cannot_reach_api_routes(settings, tenant, path) -> None:
    """A session cookie on a path dressed as /portal/ never runs a REST route (no JSON)."""
    async with portal_client(settings) as client:
        await sign_in(client, tenant)
        url = URL(str(client.make_url("/")).rstrip("/") + path, encoded=True)
        async with client.session.get(url) as response:
            assert response.content_type == "text/html"
            assert response.status in {401, 404}
