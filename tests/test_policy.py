"""The delivery policy: the one outcome model (next_step), Retry-After, backoff with jitter."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.delivery.policy import (
    JITTER_FLOOR,
    Outcome,
    RetryPolicy,
    Step,
    Streak,
    backoff_delay,
    effective_policy,
    next_step,
    parked_delay,
    parse_retry_after,
    should_auto_disable,
)
from dispatcher.durations import parse_schedule
from dispatcher.settings import DEFAULT_RETRY_SCHEDULE, Settings
from dispatcher.subscription.retry_override import MAX_STEPS, RetryOverride

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
        # as ``dispatcher.delivery.attempt`` reports them: an HTTP failure's error names the status
        error=error_class or (f"HTTP {status}" if status and not 200 <= status < 300 else None),
        error_class=error_class,
        retriable=retriable,
    )


HTTP_DATE_IN_30S = format_datetime(datetime.fromtimestamp(NOW + 30, UTC), usegmt=True)
HTTP_DATE_PAST = format_datetime(datetime.fromtimestamp(NOW - 30, UTC), usegmt=True)


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
DAY = 86400.0
HEALTHY = Streak(0, None)


def failing(
    failures: int,
    for_s: float,
    *,
    retry_for_s: float | None = None,
    webhook_for_s: float | None = None,
) -> Streak:
    """A lane state: ``failures`` so far, failing for ``for_s`` seconds until NOW."""
    return Streak(
        failures,
        NOW - for_s,
        retry_from=None if retry_for_s is None else NOW - retry_for_s,
        webhook_failing_since=None if webhook_for_s is None else NOW - webhook_for_s,
    )


def step(
    outcome: Outcome, in_s: float | None = None, reason: str | None = None, *, failures: int = 1
) -> Step:
    """The expected step after an attempt, for a streak that began at NOW."""
    at = None if in_s is None else NOW + in_s
    return Step(outcome, at, reason, failures, NOW)


def since(expected: Step, for_s: float) -> Step:
    """``expected`` with the streak having begun ``for_s`` seconds before NOW."""
    return Step(
        expected.outcome, expected.next_attempt_at, expected.reason, expected.failures, NOW - for_s
    )


GONE = "the endpoint answered 410 Gone"
WINDOW = "retry window exceeded; last error: HTTP 500"
BLOCKED = result(error_class="BlockedDestination", retriable=False)


@pytest.mark.parametrize(
    ("attempt", "state", "expected"),
    [
        # a 2xx delivers and ends the streak
        (result(200), HEALTHY, Step(Outcome.DELIVERED)),
        (result(204), failing(3, 5.0), Step(Outcome.DELIVERED)),
        (result(299), HEALTHY, Step(Outcome.DELIVERED)),
        # never retried: a blocked destination or an internal error is given up at once
        (BLOCKED, HEALTHY, step(Outcome.GIVE_UP, reason="BlockedDestination")),
        (
            result(error_class="InternalError", retriable=False),
            HEALTHY,
            step(Outcome.GIVE_UP, reason="InternalError"),
        ),
        # 410 Gone disables the webhook, even past the retry window
        (result(410), HEALTHY, step(Outcome.DISABLE, reason=GONE)),
        (
            result(410),
            failing(1, 4 * DAY),
            since(step(Outcome.DISABLE, reason=GONE, failures=2), 4 * DAY),
        ),
        # every other failure is retried in memory on the schedule
        (result(500), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(500), failing(1, 1.0), since(step(Outcome.RETRY, 2.0, failures=2), 1.0)),
        (result(500), failing(2, 3.0), since(step(Outcome.RETRY, 4.0, failures=3), 3.0)),
        (result(301), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(400), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(404), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(error_class="DeliveryTimeout"), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(error_class="ConnectError"), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(error_class="TLSError"), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(error_class="ProtocolError"), HEALTHY, step(Outcome.RETRY, 1.0)),
        # Retry-After (429/503 only) wins over a shorter backoff, never a longer one
        (result(429, retry_after="5"), HEALTHY, step(Outcome.RETRY, 5.0)),
        (result(503, retry_after="5"), HEALTHY, step(Outcome.RETRY, 5.0)),
        (result(429, retry_after="0"), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(429, retry_after="soon"), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(429, retry_after=HTTP_DATE_PAST), HEALTHY, step(Outcome.RETRY, 1.0)),
        (result(500, retry_after="5"), HEALTHY, step(Outcome.RETRY, 1.0)),
        # a long Retry-After parks rather than holding the lane in memory (bounded)
        (result(429, retry_after="900"), HEALTHY, step(Outcome.PARK, 900.0)),
        (result(429, retry_after="999999"), HEALTHY, step(Outcome.PARK, 3600.0)),
        (result(503, retry_after=HTTP_DATE_IN_30S), HEALTHY, step(Outcome.PARK, 300.0)),
        # past park_after: park on the long schedule
        (result(500), failing(3, 7.0), since(step(Outcome.PARK, 300.0, failures=4), 7.0)),
        (result(500), failing(1, 9.5), since(step(Outcome.PARK, 300.0, failures=2), 9.5)),
        (result(500), failing(4, 3600.0), since(step(Outcome.PARK, 1800.0, failures=5), 3600.0)),
        (result(500), failing(49, 3600.0), since(step(Outcome.PARK, 1800.0, failures=50), 3600.0)),
        # the last retry happens at the window's edge, then the delivery is given up
        (
            result(500),
            failing(8, 3 * DAY - 60),
            since(step(Outcome.PARK, 60.0, failures=9), 3 * DAY - 60),
        ),
        (
            result(500),
            failing(8, 3 * DAY),
            since(step(Outcome.GIVE_UP, reason=WINDOW, failures=9), 3 * DAY),
        ),
        (
            result(error_class="DeliveryTimeout"),
            failing(0, 4 * DAY),
            since(
                step(Outcome.GIVE_UP, reason="retry window exceeded; last error: DeliveryTimeout"),
                4 * DAY,
            ),
        ),
        # the window is per delivery: one parked later has time left
        (
            result(500),
            failing(8, 4 * DAY, retry_for_s=3600.0),
            since(step(Outcome.PARK, 1800.0, failures=9), 4 * DAY),
        ),
        # continuous failure of the webhook for auto_disable_after disables it
        (
            result(500),
            failing(8, 5 * DAY, retry_for_s=60.0, webhook_for_s=5 * DAY),
            since(
                step(Outcome.DISABLE, reason="failing continuously for 5 days", failures=9),
                5 * DAY,
            ),
        ),
        (
            result(500),
            failing(8, 5 * DAY, retry_for_s=60.0, webhook_for_s=5 * DAY - 1),
            since(step(Outcome.PARK, 1800.0, failures=9), 5 * DAY),
        ),
        (
            result(500),
            failing(8, 5 * DAY, retry_for_s=60.0),
            since(step(Outcome.PARK, 1800.0, failures=9), 5 * DAY),
        ),
    ],
)
def test_next_step(attempt: AttemptResult, state: Streak, expected: Step) -> None:
    """Every row of the one outcome model: deliver, retry, park, give up, disable."""
    assert next_step(attempt, state, POLICY, NOW, MaxRandom()) == expected


@given(
    elapsed=st.floats(min_value=0, max_value=10 * 86400.0),
    failures=st.integers(min_value=0, max_value=200),
    retry_after=st.one_of(st.none(), st.integers(min_value=0, max_value=3600)),
    seed=st.integers(),
)
def test_next_step_properties(elapsed, failures, retry_after, seed) -> None:
    """Retries are in the future, honour Retry-After, stay in memory only within park_after."""
    attempt = result(429, retry_after=None if retry_after is None else str(retry_after))
    state = Streak(failures, NOW - elapsed)
    taken = next_step(attempt, state, POLICY, NOW, random.Random(seed))
    assert (taken.failures, taken.failing_since) == (failures + 1, NOW - elapsed)
    if elapsed >= POLICY.retry_window:
        assert taken.outcome is Outcome.GIVE_UP
        return
    assert taken.outcome in {Outcome.RETRY, Outcome.PARK}
    assert taken.next_attempt_at is not None
    wait = float(retry_after or 0)
    assert taken.next_attempt_at > NOW or (wait == 0 and taken.outcome is Outcome.PARK)
    assert taken.next_attempt_at >= NOW + wait
    if taken.outcome is Outcome.RETRY:
        assert taken.next_attempt_at - (NOW - elapsed) <= POLICY.park_after
    else:
        # never later than the window's edge unless the receiver asked for longer
        window_end = NOW - elapsed + POLICY.retry_window
        assert taken.next_attempt_at <= max(window_end, NOW + wait) + 1e-6


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


@pytest.mark.parametrize(
    ("override", "schedule", "window"),
    [
        (RetryOverride(), DEFAULT.schedule, DEFAULT.retry_window),
        (RetryOverride((1.0, 5.0), None), (1.0, 5.0), DEFAULT.retry_window),
        (RetryOverride(None, 3600.0), DEFAULT.schedule, 3600.0),
        # beyond the operator (settings tightened after the override was saved): capped
        (RetryOverride((1.0, 30 * 86400.0), 30 * 86400.0), (1.0, 36000.0), 3 * 86400.0),
        (RetryOverride((1.0,) * (MAX_STEPS + 5), None), (1.0,) * MAX_STEPS, DEFAULT.retry_window),
    ],
)
def test_effective_policy_is_the_override_bounded_by_the_operator(
    override: RetryOverride, schedule: tuple[float, ...], window: float
) -> None:
    """A webhook's ``retry`` replaces schedule and window, never past the operator's."""
    effective = effective_policy(DEFAULT, override)
    assert (effective.schedule, effective.retry_window) == (schedule, window)
    assert effective.park_after == DEFAULT.park_after
    assert effective.auto_disable_after == DEFAULT.auto_disable_after


def test_next_step_under_an_override_gives_up_at_its_window() -> None:
    """A 1 h override window gives a delivery up after 1 h instead of the operator's 3 days."""
    policy = effective_policy(DEFAULT, RetryOverride(None, 3600.0))
    state = Streak(failures=9, failing_since=NOW - 3601)
    result = AttemptResult("w", "t", "e", "T", 10, NOW, 1.0, status_code=500, error="HTTP 500")
    assert next_step(result, state, policy, NOW, random.Random(1)).outcome is Outcome.GIVE_UP
    assert next_step(result, state, DEFAULT, NOW, random.Random(1)).outcome is Outcome.PARK
