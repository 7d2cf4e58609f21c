"""The delivery policy: classification, Retry-After, backoff with jitter, park/give up/disable."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.attempt import AttemptResult
from dispatcher.durations import parse_schedule
from dispatcher.policy import (
    JITTER_FLOOR,
    Classification,
    Decision,
    RetryPolicy,
    Verdict,
    backoff_delay,
    classify,
    decide,
    parked_delay,
    parse_retry_after,
    should_auto_disable,
)
from dispatcher.settings import DEFAULT_RETRY_SCHEDULE, Settings

NOW = 1_700_000_000.0
DEFAULT = RetryPolicy.from_settings(Settings())


class MaxRandom:
    """Always picks the top of the jitter range (deterministic tests)."""

    def uniform(self, a: float, b: float) -> float:
        return b


class MinRandom:
    """Always picks the bottom of the jitter range."""

    def uniform(self, a: float, b: float) -> float:
        return a


def result(
    status: int | None = None,
    *,
    retry_after: str | None = None,
    error_class: str | None = None,
    retriable: bool = True,
) -> AttemptResult:
    return AttemptResult(
        webhook_id="w",
        tenant_id="t",
        event_id="e",
        topic="T",
        attempt=1,
        attempted_at=NOW,
        duration_ms=1.0,
        status_code=status,
        retry_after=retry_after,
        error=error_class,
        error_class=error_class,
        retriable=retriable,
    )


HTTP_DATE_IN_30S = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
HTTP_DATE_PAST = format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)


@pytest.mark.parametrize(
    ("outcome", "expected"),
    [
        (result(200), Classification(Verdict.DELIVERED)),
        (result(204), Classification(Verdict.DELIVERED)),
        (result(299), Classification(Verdict.DELIVERED)),
        (result(410), Classification(Verdict.DISABLE)),
        (result(429, retry_after="2"), Classification(Verdict.RETRY, 2.0)),
        (result(503, retry_after="120"), Classification(Verdict.RETRY, 120.0)),
        (result(429, retry_after=HTTP_DATE_IN_30S), Classification(Verdict.RETRY, 30.0)),
        (result(429, retry_after=HTTP_DATE_PAST), Classification(Verdict.RETRY, 0.0)),
        (result(429, retry_after="999999"), Classification(Verdict.RETRY, 3600.0)),
        (result(429, retry_after="soon"), Classification(Verdict.RETRY, None)),
        (result(429, retry_after="-5"), Classification(Verdict.RETRY, None)),
        (result(429), Classification(Verdict.RETRY, None)),
        (result(500, retry_after="5"), Classification(Verdict.RETRY, None)),
        (result(301), Classification(Verdict.RETRY)),
        (result(400), Classification(Verdict.RETRY)),
        (result(404), Classification(Verdict.RETRY)),
        (result(500), Classification(Verdict.RETRY)),
        (result(error_class="DeliveryTimeout"), Classification(Verdict.RETRY)),
        (result(error_class="ConnectError"), Classification(Verdict.RETRY)),
        (result(error_class="TLSError"), Classification(Verdict.RETRY)),
        (result(error_class="ProtocolError"), Classification(Verdict.RETRY)),
        (
            result(error_class="BlockedDestination", retriable=False),
            Classification(Verdict.GIVE_UP),
        ),
    ],
    ids=lambda value: repr(value) if isinstance(value, Classification) else None,
)
def test_classify(outcome: AttemptResult, expected: Classification) -> None:
    """2xx delivers, 410 disables, blocked gives up, 429/503 honour Retry-After, else retry."""
    assert classify(outcome, retry_after_max=3600.0, now=NOW) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("0", 0.0),
        ("2", 2.0),
        (" 7 ", 7.0),
        ("1.5", None),
        ("١٢", None),  # non-ASCII digits are not delta-seconds
        ("Wed, 21 Oct 2015 07:28:00", None),  # no zone: not an HTTP-date
        (HTTP_DATE_IN_30S, 30.0),
        (HTTP_DATE_PAST, 0.0),
        ("100000", 60.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    """Retry-After is delta-seconds or an HTTP-date, relative to now, bounded, else ignored."""
    assert parse_retry_after(value, now=NOW, maximum=60.0) == expected


@pytest.mark.parametrize(
    ("schedule", "park_after", "short", "long"),
    [
        (
            parse_schedule(DEFAULT_RETRY_SCHEDULE),
            60.0,
            (1, 2, 4, 8, 15, 30),
            (300, 1800, 7200, 18000, 36000),
        ),
        ((0.05, 0.1, 0.2, 0.5, 1, 1), 1.0, (0.05, 0.1, 0.2, 0.5), (1, 1)),
        ((1, 2, 3), 100.0, (1, 2, 3), (3,)),
        ((10, 20), 5.0, (), (10, 20)),
    ],
)
def test_schedule_split(schedule, park_after, short, long) -> None:
    """Delays fitting in park_after are short (in-memory) retries; the rest is the long schedule."""
    policy = RetryPolicy(schedule, park_after, 86400.0, 86400.0, 60.0)
    assert policy.short_schedule == short
    assert policy.long_schedule == long


@pytest.mark.parametrize(
    ("failures", "cap"),
    [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 4.0), (100, 4.0)],
)
def test_backoff_delay_bounds(failures: int, cap: float) -> None:
    """The n-th failure waits between the floor and schedule[n-1]; the last delay repeats."""
    schedule = (1.0, 2.0, 4.0)
    assert backoff_delay(failures, schedule, MaxRandom()) == cap
    assert backoff_delay(failures, schedule, MinRandom()) == pytest.approx(cap * JITTER_FLOOR)


@given(
    failures=st.integers(min_value=-5, max_value=1000),
    schedule=st.lists(st.floats(min_value=0.001, max_value=1e6), min_size=1, max_size=20),
    seed=st.integers(),
)
def test_backoff_delay_is_positive_and_bounded(failures, schedule, seed) -> None:
    """Whatever the inputs, the jittered delay is > 0 and never above the scheduled delay."""
    delay = backoff_delay(failures, tuple(schedule), random.Random(seed))
    assert 0 < delay <= max(schedule)
    assert delay <= schedule[min(max(failures, 1), len(schedule)) - 1]


def test_backoff_delay_jitters() -> None:
    """Full jitter: repeated draws for the same failure count are spread out, not equal."""
    rng = random.Random(1)
    draws = {backoff_delay(3, (1.0, 2.0, 4.0), rng) for _ in range(50)}
    assert len(draws) > 40
    assert min(draws) < 2.0 < max(draws)


POLICY = RetryPolicy(
    schedule=(1.0, 2.0, 4.0, 300.0, 1800.0),
    park_after=10.0,
    retry_window=3 * 86400.0,
    auto_disable_after=5 * 86400.0,
    retry_after_max=3600.0,
)
RETRY = Classification(Verdict.RETRY)


@pytest.mark.parametrize(
    ("classification", "elapsed", "failures", "expected"),
    [
        (Classification(Verdict.DELIVERED), 0.0, 0, Decision("done")),
        (Classification(Verdict.DISABLE), 0.0, 1, Decision("disable")),
        (Classification(Verdict.GIVE_UP), 0.0, 1, Decision("give_up")),
        # short retries in memory, on the schedule
        (RETRY, 0.0, 1, Decision("retry", NOW + 1.0)),
        (RETRY, 1.0, 2, Decision("retry", NOW + 2.0)),
        (RETRY, 3.0, 3, Decision("retry", NOW + 4.0)),
        # Retry-After wins over a shorter backoff
        (Classification(Verdict.RETRY, 5.0), 0.0, 1, Decision("retry", NOW + 5.0)),
        (Classification(Verdict.RETRY, 0.5), 0.0, 1, Decision("retry", NOW + 1.0)),
        # past park_after: park on the long schedule
        (RETRY, 7.0, 4, Decision("park", NOW + 300.0)),
        (RETRY, 9.5, 2, Decision("park", NOW + 300.0)),
        (RETRY, 3600.0, 5, Decision("park", NOW + 1800.0)),
        (RETRY, 3600.0, 50, Decision("park", NOW + 1800.0)),
        # a long Retry-After parks rather than holding the lane in memory
        (Classification(Verdict.RETRY, 900.0), 0.0, 1, Decision("park", NOW + 900.0)),
        # the last retry happens at the window's edge, then it is given up
        (RETRY, 3 * 86400.0 - 60, 9, Decision("park", NOW + 60.0)),
        (RETRY, 3 * 86400.0, 9, Decision("give_up")),
        (RETRY, 4 * 86400.0, 1, Decision("give_up")),
    ],
)
def test_decide(classification, elapsed, failures, expected) -> None:
    """Done, disable, give up, short retry, park on the long schedule, give up past the window."""
    assert decide(POLICY, classification, NOW - elapsed, failures, NOW, MaxRandom()) == expected


@given(
    elapsed=st.floats(min_value=0, max_value=10 * 86400.0),
    failures=st.integers(min_value=1, max_value=200),
    retry_after=st.one_of(st.none(), st.floats(min_value=0, max_value=3600.0)),
    seed=st.integers(),
)
def test_decide_properties(elapsed, failures, retry_after, seed) -> None:
    """Retries are in the future, honour Retry-After, stay in memory only within park_after."""
    classification = Classification(Verdict.RETRY, retry_after)
    decision = decide(POLICY, classification, NOW - elapsed, failures, NOW, random.Random(seed))
    if elapsed >= POLICY.retry_window:
        assert decision == Decision("give_up")
        return
    assert decision.action in {"retry", "park"}
    assert decision.next_attempt_at is not None
    assert decision.next_attempt_at > NOW or (retry_after == 0 and decision.action == "park")
    assert decision.next_attempt_at >= NOW + (retry_after or 0.0)
    if decision.action == "retry":
        assert decision.next_attempt_at - (NOW - elapsed) <= POLICY.park_after
    else:
        # never later than the window's edge unless the receiver asked for longer
        window_end = NOW - elapsed + POLICY.retry_window
        assert decision.next_attempt_at <= max(window_end, NOW + (retry_after or 0.0)) + 1e-6


def test_parked_delay_uses_long_schedule() -> None:
    """Parked retries start at the long schedule's first delay and repeat its last one."""
    first_parked = len(POLICY.short_schedule) + 1
    assert parked_delay(POLICY, first_parked, MaxRandom()) == 300.0
    assert parked_delay(POLICY, first_parked + 1, MaxRandom()) == 1800.0
    assert parked_delay(POLICY, first_parked + 99, MaxRandom()) == 1800.0


@pytest.mark.parametrize(
    ("failing_for", "expected"),
    [(None, False), (0.0, False), (5 * 86400.0 - 1, False), (5 * 86400.0, True), (9e6, True)],
)
def test_should_auto_disable(failing_for: float | None, expected: bool) -> None:
    """A webhook is auto-disabled after auto_disable_after of continuous failure."""
    since = None if failing_for is None else NOW - failing_for
    assert should_auto_disable(POLICY, since, NOW) is expected


def test_policy_from_settings() -> None:
    """The policy takes its schedule and windows from settings."""
    settings = Settings().replace(retry_schedule=(0.05, 0.1), park_after=1.0, retry_window=6.0)
    policy = RetryPolicy.from_settings(settings)
    assert policy.schedule == (0.05, 0.1)
    assert (policy.park_after, policy.retry_window) == (1.0, 6.0)
    assert policy.auto_disable_after == settings.auto_disable_after
    assert policy.retry_after_max == settings.retry_after_max


def test_default_schedule_parks_after_a_minute() -> None:
    """By default short retries add up to about a minute; long ones are 5m…10h."""
    assert sum(DEFAULT.short_schedule) <= 60.0
    assert DEFAULT.long_schedule == (300.0, 1800.0, 7200.0, 18000.0, 36000.0)
