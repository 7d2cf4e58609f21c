"""API keys have a lifecycle (DESIGN.md §13): create, list and revoke, over HTTP and the CLI.

Revoking a key ends at once what it opened: the key answers 401, its portal sessions
answer the portal's 401 page, its unused links no longer sign in.
"""

from __future__ import annotations

from unittest.mock import ANY

import asyncpg

from dispatcher.settings import Settings
from dispatcher.store import portal
from dispatcher.store.api_key_store import Caller, caller_for_api_key, create_api_key, hash_api_key
from tests.conftest import TenantKey
from tests.support.api import api_client, assert_matches
from tests.support.portal import portal_client, portal_link, sign_in
from tests.test_cli import hooklane


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def test_create_shows_the_key_once_and_list_never(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """POST answers the key once; GET lists every key with its prefix, never the key."""
    async with api_client(settings) as client:
        response = await client.post("/api-keys", json={"name": "ci"}, headers=tenant.headers)
        assert response.status == 201
        created = await response.json()
        assert_matches("ApiKeyCreated", created)
        assert created["key"].startswith(created["prefix"])
        assert created["name"] == "ci" and created["revoked_at"] is None
        assert await caller_for_api_key(pool, created["key"]) == Caller(tenant.id, ANY)

        listed = await client.get("/api-keys", headers=bearer(created["key"]))
        assert listed.status == 200
        body = await listed.json()
    assert_matches("ApiKeyList", body)
    assert [key["name"] for key in body["data"]] == ["first key", "ci"]
    assert created["key"] not in str(body) and tenant.api_key not in str(body)
    new = body["data"][1]
    assert new["id"] == created["id"] and new["last_used_at"] is not None  # used for the GET
    stored = await pool.fetchval("SELECT key_hash FROM api_keys WHERE id = $1", created["id"])
    assert bytes(stored) == hash_api_key(created["key"])


async def test_create_refuses_a_bad_body_with_the_envelope(
    settings: Settings, tenant: TenantKey
) -> None:
    """No name, an empty one, an unknown field or a NUL: 422 naming the place."""
    async with api_client(settings) as client:
        for body, path in (
            ({}, ""),
            ({"name": ""}, "/name"),
            ({"name": "x", "scope": "all"}, "/scope"),
            ({"name": "a\u0000b"}, "/name"),
        ):
            response = await client.post("/api-keys", json=body, headers=tenant.headers)
            assert response.status == 422, body
            error = (await response.json())["error"]
            assert error["code"] == "validation_failed"
            assert error["details"][0]["path"] == path, body


async def test_revoked_key_answers_401_and_others_keep_working(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """DELETE → 204; the revoked key gets 401 at once, the tenant's other key does not."""
    async with api_client(settings) as client:
        created = await (
            await client.post("/api-keys", json={"name": "leaked"}, headers=tenant.headers)
        ).json()
        assert (await client.get("/webhooks", headers=bearer(created["key"]))).status == 200
        response = await client.delete(f"/api-keys/{created['id']}", headers=tenant.headers)
        assert response.status == 204
        refused = await client.get("/webhooks", headers=bearer(created["key"]))
        assert refused.status == 401
        assert (await refused.json())["error"]["code"] == "unauthorized"
        assert (await client.get("/webhooks", headers=tenant.headers)).status == 200
        again = await client.delete(f"/api-keys/{created['id']}", headers=tenant.headers)
        assert again.status == 204  # idempotent, the first revoked_at kept
        listed = (await (await client.get("/api-keys", headers=tenant.headers)).json())["data"]
    revoked = next(key for key in listed if key["id"] == created["id"])
    assert revoked["revoked_at"] is not None


async def test_another_tenants_key_is_a_404(
    settings: Settings, tenant: TenantKey, other_tenant: TenantKey
) -> None:
    """Revoking another tenant's key id, or an unknown one, answers 404 and revokes nothing."""
    async with api_client(settings) as client:
        listed = await (await client.get("/api-keys", headers=other_tenant.headers)).json()
        foreign = listed["data"][0]["id"]
        for key_id in (foreign, "key_0000", "nope"):
            response = await client.delete(f"/api-keys/{key_id}", headers=tenant.headers)
            assert response.status == 404
            assert (await response.json())["error"]["code"] == "not_found"
        assert (await client.get("/webhooks", headers=other_tenant.headers)).status == 200


async def test_revoking_a_key_ends_its_portal_session_and_unused_link(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """The key's session answers 401 and its unused link no longer signs in; others stay."""
    async with pool.acquire() as conn:
        key, secret = await create_api_key(conn, tenant.id, "portal")
    doomed = TenantKey(tenant.id, secret)
    async with portal_client(settings) as doomed_browser, portal_client(settings) as kept_browser:
        await sign_in(doomed_browser, doomed)
        unused = await portal_link(doomed_browser, doomed)
        await sign_in(kept_browser, tenant)
        assert (await doomed_browser.get("/portal/webhooks")).status == 200

        response = await doomed_browser.delete(f"/api-keys/{key.id}", headers=tenant.headers)
        assert response.status == 204

        ended = await doomed_browser.get("/portal/webhooks")
        assert ended.status == 401
        assert "session has ended" in await ended.text()
        refused = await doomed_browser.get(unused)
        assert refused.status == 403
        assert (await doomed_browser.get("/portal/webhooks")).status == 401
        assert (await kept_browser.get("/portal/webhooks")).status == 200
    left = await pool.fetchval(
        "SELECT (SELECT count(*) FROM portal_sessions WHERE api_key_id = $1)"
        " + (SELECT count(*) FROM portal_links WHERE api_key_id = $1)",
        key.id,
    )
    assert left == 0


async def test_a_revoked_keys_link_and_session_open_nothing_even_if_left_behind(
    pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """A link or session row that outlived its key's revocation (a race) is refused on lookup."""
    async with pool.acquire() as conn:
        key, _ = await create_api_key(conn, tenant.id, "raced")
        await portal.create_link(conn, tenant.id, 60.0, "http://x", api_key_id=key.id)
        link = await portal.create_link(conn, tenant.id, 60.0, "http://x", api_key_id=key.id)
        session = await portal.create_session(conn, portal.Grant(tenant.id, key.id))
        assert await portal.session_tenant(conn, session) == tenant.id
        # Revoked without the cleanup, as if the rows were written during the revocation.
        await conn.execute("UPDATE api_keys SET revoked_at = now() WHERE id = $1", key.id)
        assert await portal.session_tenant(conn, session) is None
        assert await portal.redeem_link(conn, link.url.rsplit("/", 1)[1]) is None


async def test_cli_creates_lists_and_revokes_keys(
    settings: Settings, pool: asyncpg.Pool, tenant: TenantKey
) -> None:
    """`hooklane keys create|list|revoke`: the key works, is listed by prefix, then stops."""
    code, out, err = await hooklane(settings, "keys", "create", tenant.id, "--name", "deploy")
    assert code == 0, err
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    key_id, secret = fields["id"].strip(), fields["api key"].strip()
    assert await caller_for_api_key(pool, secret) == Caller(tenant.id, ANY)

    code, out, err = await hooklane(settings, "keys", "list", tenant.id)
    assert code == 0, err
    line = next(line for line in out.splitlines() if line.startswith(key_id))
    assert "deploy" in line and secret[:7] in line and secret not in out and "live" in line

    code, out, err = await hooklane(settings, "keys", "revoke", key_id)
    assert code == 0, err
    assert await caller_for_api_key(pool, secret) is None
    assert (await hooklane(settings, "keys", "revoke", "key_unknown"))[0] == 1
    assert (await hooklane(settings, "keys", "create", "ten_unknown"))[0] == 1
