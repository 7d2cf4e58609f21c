"""``/readyz`` logs a change of readiness once, not every probe."""

from __future__ import annotations

from structlog.testing import capture_logs

from dispatcher.ops.readiness import NotReady
from tests.test_ops_server import get_json, serving


class Flaky:
    """A check whose answer the test sets."""

    def __init__(self) -> None:
        self.error: str | None = "down"

    async def __call__(self) -> None:
        if self.error is not None:
            raise NotReady(self.error)


async def test_not_ready_is_logged_when_it_changes() -> None:
    check = Flaky()
    with capture_logs() as logs:
        async with serving({"kafka": check}) as (server, session):
            url = server.url + "/readyz"
            statuses = [(await get_json(session, url))[0] for _ in range(3)]
            check.error = "refused: SASL authentication failed"
            statuses += [(await get_json(session, url))[0] for _ in range(2)]
            check.error = None
            statuses += [(await get_json(session, url))[0] for _ in range(2)]
    assert statuses == [503, 503, 503, 503, 503, 200, 200]
    lines = [
        (e["event"], e.get("failed")) for e in logs if e["event"] in {"ops.not_ready", "ops.ready"}
    ]
    assert lines == [
        ("ops.not_ready", {"kafka": "down"}),
        ("ops.not_ready", {"kafka": "refused: SASL authentication failed"}),
        ("ops.ready", None),
    ]
