"""A developer's loopback or http:// receiver is refused with the one switch that helps."""

from __future__ import annotations

import pytest

from dispatcher.delivery.http.ssrf import InvalidTarget, check_target_url
from dispatcher.settings import Settings


@pytest.mark.parametrize(
    "url",
    ["http://hooks.example.com/", "https://127.0.0.1:9911/hook", "https://10.1.2.3/hook"],
)
async def test_refusals_a_developer_meets_name_allow_private_targets(url: str) -> None:
    """http:// and loopback/private addresses: the error names the setting to turn on."""
    with pytest.raises(InvalidTarget, match="HOOKLANE_ALLOW_PRIVATE_TARGETS=true"):
        await check_target_url(url, Settings())
