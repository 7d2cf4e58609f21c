"""With private targets off, the API refuses webhook URLs that point inside (registration).

Only IP literals and non-https URLs are used, so nothing is resolved or contacted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from dispatcher.settings import Settings
from tests.conftest import TenantKey
from tests.support.api import Client, api_client, webhook_body


@pytest.fixture
async def strict_client(settings: Settings) -> AsyncIterator[Client]:
    async with api_client(settings.replace(allow_private_targets=False)) as running:
        yield running


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]:8443/hook", "loopback"),
        ("https://10.1.2.3/hook", "private"),
        ("https://192.168.0.10/hook", "private"),
        ("https://172.20.0.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data/", "cloud metadata"),
        ("https://100.64.1.1/hook", "carrier-grade NAT"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://[fd00::1]/hook", "unique local"),
        ("https://[fe80::1]/hook", "link-local"),
        ("https://2130706433/hook", "canonical"),
        ("http://8.8.8.8/hook", "https"),
        ("https://user:pw@8.8.8.8/hook", "credentials"),
        ("https://a..example.com/hook", "not a valid domain name"),
    ],
)
async def test_create_refuses_internal_urls(
    strict_client: Client, tenant: TenantKey, url: str, reason: str
) -> None:
    """POST /webhooks answers 422 naming why the URL is not allowed."""
    response = await strict_client.post("/webhooks", json=webhook_body(url), headers=tenant.headers)
    assert response.status == 422, await response.text()
    error = (await response.json())["error"]
    assert reason in str(error), error


async def test_update_refuses_internal_urls(strict_client: Client, tenant: TenantKey) -> None:
    """A public webhook cannot be moved to an internal address by a partial update."""
    created = await strict_client.post(
        "/webhooks", json=webhook_body("https://8.8.8.8/hook"), headers=tenant.headers
    )
    assert created.status == 201, await created.text()
    webhook_id = (await created.json())["id"]
    response = await strict_client.post(
        f"/webhooks/{webhook_id}",
        json={"url": "https://169.254.169.254/latest/meta-data/"},
        headers=tenant.headers,
    )
    assert response.status == 422
    current = await strict_client.get(f"/webhooks/{webhook_id}", headers=tenant.headers)
    assert (await current.json())["url"] == "https://8.8.8.8/hook"


async def test_allowlisted_private_network_may_be_registered(
    settings: Settings, tenant: TenantKey
) -> None:
    """HOOKLANE_ALLOWED_TARGET_CIDRS lets an operator allow an internal network."""
    allowing = settings.replace(allow_private_targets=False, allowed_target_cidrs=("10.1.0.0/16",))
    async with api_client(allowing) as client:
        inside = await client.post(
            "/webhooks", json=webhook_body("https://10.1.2.3/hook"), headers=tenant.headers
        )
        outside = await client.post(
            "/webhooks", json=webhook_body("https://10.2.0.1/hook"), headers=tenant.headers
        )
    assert inside.status == 201
    assert outside.status == 422
