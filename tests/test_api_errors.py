"""Auth, the error envelope and body handling: 401, 404, 405, 400, 413, 415, 422 — never 500."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from api.auth import bearer_token
from api.errors import MAX_BODY
from dispatcher.store.api_key_store import hash_api_key
from tests.support.api import Client, api_client, assert_matches, webhook_body

# Fixed, not random: parametrized ids must be the same in every pytest-xdist worker.
UNKNOWN_ID = "3f1b2c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"

URL = "http://127.0.0.1:9/hook"


@pytest.fixture
async def client(settings) -> AsyncIterator[Client]:
    async with api_client(settings) as running:
        yield running


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer hl_abc", "hl_abc"),
        ("bearer hl_abc", "hl_abc"),
        ("  Bearer   hl_abc  ", "hl_abc"),
        ("Basic dXNlcjpwdw==", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("Bearer a b", None),
        ("hl_abc", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_parsing(header, token):
    """Only `Bearer <one token>` yields a key."""
    assert bearer_token(header) == token


AUTHENTICATED = [
    ("POST", "/webhooks"),
    ("GET", "/webhooks"),
    ("GET", f"/webhooks/{UNKNOWN_ID}"),
    ("POST", f"/webhooks/{UNKNOWN_ID}"),
    ("DELETE", f"/webhooks/{UNKNOWN_ID}"),
    ("POST", f"/webhooks/test/trigger/{UNKNOWN_ID}"),
    ("GET", "/topics"),
    ("POST", "/events"),
]


@pytest.mark.parametrize(("method", "path"), AUTHENTICATED)
@pytest.mark.parametrize(
    "authorization", [None, "Bearer hl_not_a_real_key", "Basic dXNlcjpwdw==", "Bearer"]
)
async def test_routes_need_a_valid_api_key(client, method, path, authorization):
    """Tenant routes answer 401 (envelope and a Bearer challenge) without a valid key."""
    headers = {"Authorization": authorization} if authorization else {}
    response = await client.request(method, path, headers=headers, json={})
    assert response.status == 401
    payload = await response.json()
    assert_matches("Error", payload)
    assert payload["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


async def test_revoked_key_is_rejected(client, tenant, pool):
    """A revoked API key answers 401."""
    assert (await client.get("/topics", headers=tenant.headers)).status == 200
    await pool.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE key_hash = $1", hash_api_key(tenant.api_key)
    )
    assert (await client.get("/topics", headers=tenant.headers)).status == 401


async def test_health_and_openapi_need_no_key(client):
    """GET /healthz answers {"status": "ok"} and /openapi.json the document, without a key."""
    health = await client.get("/healthz")
    assert health.status == 200
    assert await health.json() == {"status": "ok"}
    document = await client.get("/openapi.json")
    assert document.status == 200
    assert (await document.json())["openapi"].startswith("3.1")


async def test_unknown_route_is_a_json_404(client, tenant):
    """Unknown paths answer the 404 envelope, with or without a key."""
    no_key: dict[str, str] = {}
    for headers in (no_key, tenant.headers):
        response = await client.get("/no/such/route", headers=headers)
        assert response.status == 404
        payload = await response.json()
        assert_matches("Error", payload)
        assert payload["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/webhooks", {"GET", "POST"}),
        ("PATCH", f"/webhooks/{UNKNOWN_ID}", {"GET", "POST", "DELETE"}),
        ("DELETE", "/topics", {"GET"}),
        ("GET", "/events", {"POST"}),
    ],
)
async def test_wrong_method_is_a_json_405(client, tenant, method, path, allowed):
    """A known path with the wrong method answers 405 with Allow and the envelope."""
    response = await client.request(method, path, headers=tenant.headers)
    assert response.status == 405
    assert (await response.json())["error"]["code"] == "method_not_allowed"
    assert set(response.headers["Allow"].split(",")) == allowed


BODY_ROUTES = ["/webhooks", "/events"]


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("raw", [b"{", b"{'url': 1}", b"[1,", b"nul", b"\xff\xfe"])
async def test_malformed_json_is_400(client, tenant, path, raw):
    """A body that is not JSON answers 400 malformed_json."""
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = await client.post(path, data=raw, headers=headers)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
async def test_non_json_content_type_is_415(client, tenant, path, content_type):
    """A body sent as anything but JSON answers 415."""
    headers: dict[str, str] = dict(tenant.headers)
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(path, data=b'{"url": "x"}', headers=headers)
    assert response.status == 415
    assert (await response.json())["error"]["code"] == "unsupported_media_type"


async def test_json_with_charset_is_accepted(client, tenant):
    """application/json; charset=utf-8 is JSON."""
    headers = {**tenant.headers, "Content-Type": "application/json; charset=utf-8"}
    response = await client.post(
        "/webhooks",
        data=b'{"url": "%s", "topics": ["NEXUS.THRESHOLD.STATE.ALERT"]}' % URL.encode(),
        headers=headers,
    )
    assert response.status == 201


@pytest.mark.parametrize("path", BODY_ROUTES)
async def test_body_over_one_mib_is_413(client, tenant, path):
    """A body larger than 1 MiB answers 413 payload_too_large."""
    body = webhook_body(URL, name="x" * MAX_BODY)
    response = await client.post(path, json=body, headers=tenant.headers)
    assert response.status == 413
    assert (await response.json())["error"]["code"] == "payload_too_large"


@pytest.mark.parametrize("path", BODY_ROUTES)
@pytest.mark.parametrize("raw", [b"[]", b'"text"', b"3", b"null", b"true"])
async def test_non_object_json_is_422(client, tenant, path, raw):
    """JSON that is not an object fails validation (422), it does not crash."""
    headers = {**tenant.headers, "Content-Type": "application/json"}
    response = await client.post(path, data=raw, headers=headers)
    assert response.status == 422
    assert (await response.json())["error"]["code"] == "validation_failed"


async def test_wrong_types_deep_inside_are_422(client, tenant):
    """Wrong types anywhere in the body are 422 with a pointer to each."""
    body = {"url": ["x"], "topics": [1, None], "name": 3, "state": None}
    response = await client.post("/webhooks", json=body, headers=tenant.headers)
    assert response.status == 422
    paths = {d["path"] for d in (await response.json())["error"]["details"]}
    assert {"/url", "/topics/0", "/topics/1", "/name", "/state"} <= paths


async def test_unexpected_errors_are_a_500_envelope(client, tenant, monkeypatch):
    """A bug answers the 500 envelope without internals, not a traceback page."""
    import api.topics

    async def broken(executor):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.topics, "list_topics", broken)
    response = await client.get("/topics", headers=tenant.headers)
    assert response.status == 500
    text = await response.text()
    assert "secret internals" not in text
    assert (await response.json())["error"]["code"] == "internal_error"
