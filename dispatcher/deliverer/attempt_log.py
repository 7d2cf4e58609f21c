"""The attempt log: every delivery attempt, written in batches, queryable per webhook.

``AttemptLog.record()`` is synchronous and never waits for Postgres: results go into
a bounded buffer that a background task writes every ``flush_interval`` seconds (or
as soon as ``max_batch`` results wait), each batch in one transaction
(``dispatcher.store.attempt_store.write_batch``: one COPY, one health UPDATE). When the buffer
overflows (Postgres unreachable for long), the oldest results are dropped, counted, and
reported once per overflow episode: one ``attempt_log.rows_dropped`` warning with
``dropped=N`` as soon as rows are written again (or at close).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

import asyncpg
import structlog

from dispatcher.delivery.attempt import AttemptResult
from dispatcher.ids import parse_uuid
from dispatcher.ops.metrics import DelivererMetrics
from dispatcher.store.attempt_store import write_batch

log = structlog.get_logger(__name__)

# Results kept while Postgres is unreachable; beyond this the oldest are dropped.
MAX_BUFFERED = 50_000


class AttemptLog:
    """Buffers attempt results and writes them in batches (see the module docstring)."""

    def __init__(
        self,
        pool: asyncpg.Pool[asyncpg.Record],
        flush_interval: float = 0.1,
        max_batch: int = 500,
        max_buffered: int = MAX_BUFFERED,
        metrics: DelivererMetrics | None = None,
    ) -> None:
        self._pool = pool
        self._metrics = metrics  # attempt_log_rows_total; None: not counted
        self._flush_interval = flush_interval
        self._max_batch = max_batch
        self._buffer: deque[AttemptResult] = deque(maxlen=max(max_buffered, max_batch))
        self._nonempty = asyncio.Event()
        self._full = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.dropped = 0
        self.written = 0
        self._dropped_unreported = 0  # dropped in the current overflow episode

    def start(self) -> None:
        """Start the background writer (inside a running loop)."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="attempt-log")

    def record(self, result: AttemptResult) -> None:
        """Queue ``result`` for the next batch; never blocks."""
        try:
            parse_uuid(result.webhook_id)
        except ValueError:
            log.error("attempt_log.invalid_webhook_id", webhook_id=result.webhook_id)
            return
        if len(self._buffer) == self._buffer.maxlen:
            self._drop(1)  # the deque drops the oldest: better than unbounded memory
        self._buffer.append(result)
        self._nonempty.set()
        if len(self._buffer) >= self._max_batch:
            self._full.set()

    @property
    def pending(self) -> int:
        """Results not yet written."""
        return len(self._buffer)

    async def flush(self) -> None:
        """Write everything recorded so far; raises if Postgres fails (results are kept)."""
        async with self._lock:
            while self._buffer:
                size = min(self._max_batch, len(self._buffer))
                batch = [self._buffer.popleft() for _ in range(size)]
                try:
                    async with self._pool.acquire() as conn:
                        await write_batch(conn, batch)
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError) as exc:
                    # Retrying cannot fix bad data; keep the log flowing.
                    self.dropped += len(batch)
                    if self._metrics is not None:
                        self._metrics.attempt_log_dropped.inc(len(batch))
                    log.error("attempt_log.batch_rejected", error=str(exc), size=len(batch))
                    continue
                except BaseException:
                    # Put the batch back in front, in order, for the next flush; a buffer
                    # that filled up meanwhile loses its newest results to make room.
                    assert self._buffer.maxlen is not None
                    self._drop(max(0, len(self._buffer) + len(batch) - self._buffer.maxlen))
                    self._buffer.extendleft(reversed(batch))
                    raise
                self.written += len(batch)
                if self._metrics is not None:
                    self._metrics.attempt_log_written.inc(len(batch))
                self._report_dropped()

    async def close(self) -> None:
        """Stop the writer and write what is left."""
        self._closing = True
        self._nonempty.set()
        self._full.set()
        task, self._task = self._task, None
        try:
            if task is not None:
                await task
            await self.flush()
        finally:
            self._report_dropped()

    def _drop(self, count: int) -> None:
        self.dropped += count
        self._dropped_unreported += count
        if self._metrics is not None:
            self._metrics.attempt_log_dropped.inc(count)

    def _report_dropped(self) -> None:
        # Once per episode, when it ends: a warning per dropped row would flood the log
        # exactly when Postgres is down.
        if self._dropped_unreported:
            log.warning(
                "attempt_log.rows_dropped", dropped=self._dropped_unreported, total=self.dropped
            )
            self._dropped_unreported = 0

    async def _run(self) -> None:
        # Idle costs nothing: sleep until something is recorded, then give the batch
        # flush_interval to fill (or less, when it fills up).
        while not self._closing:
            await self._nonempty.wait()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._full.wait(), self._flush_interval)
            if self._closing:
                return
            self._full.clear()
            self._nonempty.clear()
            try:
                await self.flush()
            except Exception as exc:  # Postgres down or restarting: keep and retry later
                log.warning("attempt_log.flush_failed", error=str(exc), pending=self.pending)
                self._nonempty.set()
                await asyncio.sleep(self._flush_interval * 10)
