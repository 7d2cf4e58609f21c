"""Per-webhook retry overrides are parsed and held within the operator's bounds."""

from __future__ import annotations

import pytest

from dispatcher.settings import Settings
from dispatcher.subscription.retry_override import (
    MAX_STEPS,
    InvalidRetry,
    RetryOverride,
    parse_retry,
    stored_override,
)

SETTINGS = Settings(retry_schedule=(1.0, 5.0, 60.0, 3600.0), retry_window=86400.0)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, RetryOverride()),
        ({}, RetryOverride()),
        ({"schedule": "1s,5s,1m"}, RetryOverride((1.0, 5.0, 60.0), None)),
        ({"window": "1d"}, RetryOverride(None, 86400.0)),
        ({"schedule": "500ms, 1h", "window": "6h"}, RetryOverride((0.5, 3600.0), 21600.0)),
    ],
)
def test_valid_overrides(spec: dict[str, str] | None, expected: RetryOverride) -> None:
    """Overrides within the bounds parse to seconds; absent fields keep the defaults."""
    assert parse_retry(spec, SETTINGS) == expected


@pytest.mark.parametrize(
    ("spec", "path", "words"),
    [
        ({"schedule": "1s,2h"}, "/schedule", "longer than this operator allows (1h"),
        ({"schedule": "soon"}, "/schedule", "not a duration"),
        ({"schedule": ","}, "/schedule", "empty"),
        ({"schedule": "0s"}, "/schedule", "longer than 0"),
        ({"schedule": ",".join(["1s"] * (MAX_STEPS + 1))}, "/schedule", "at most"),
        ({"window": "2d"}, "/window", "at most 1d"),
        ({"window": "0s"}, "/window", "longer than 0"),
        ({"window": "a week"}, "/window", "not a duration"),
    ],
)
def test_overrides_beyond_the_operator_are_refused(
    spec: dict[str, str], path: str, words: str
) -> None:
    """A delay or window beyond the settings, or a malformed one, names its field."""
    with pytest.raises(InvalidRetry) as caught:
        parse_retry(spec, SETTINGS)
    assert caught.value.path == path
    assert words in caught.value.message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (None, RetryOverride()),
        ({"schedule": "1s,5s", "window": "1d"}, RetryOverride((1.0, 5.0), 86400.0)),
        # not checked against the settings: ``policy.effective_policy`` bounds it
        ({"schedule": "30d"}, RetryOverride((30 * 86400.0,), None)),
        # parts written around the API that do not parse fall back to the operator's
        ({"schedule": "soon", "window": "1h"}, RetryOverride(None, 3600.0)),
        ({"schedule": "1s", "window": 5}, RetryOverride((1.0,), None)),
        ({"schedule": "0s", "window": "0s"}, RetryOverride()),
    ],
)
def test_stored_overrides_parse_without_the_settings(
    spec: dict[str, object] | None, expected: RetryOverride
) -> None:
    """What the target loader makes of a stored ``retry`` column."""
    assert stored_override(spec) == expected  # type: ignore[arg-type]
