"""The attempt log and redelivery: ``/webhooks/{id}/attempts`` and ``/webhooks/{id}/recover``.

- ``GET /webhooks/{id}/attempts?outcome&limit&cursor``: newest first, keyset pages.
- ``POST /webhooks/{id}/attempts/{attempt_id}/retry``: send that attempt's event again.
- ``POST /webhooks/{id}/recover`` ``{"since"}`` (RFC 3339 or unix seconds): send every
  failed delivery since then again, oldest first, and remove them from the failed deliveries.

Redeliveries are ``DeliveryTask(kind="redelivery")`` written to the deliveries topic,
keyed by webhook id, so they queue behind the webhook's other deliveries and keep its
ordering rules (and a parked webhook appends them to its backlog).

A retry sends the stored task when the delivery failed for good (failed deliveries)
or is still parked, and otherwise rebuilds it from the payload store (the ``events``
table, kept ``HOOKLANE_ATTEMPT_RETENTION_DAYS``): a delivered attempt is sent again
with the same body and ``webhook-id``. A test event, or an event purged from the store,
answers 404 ``event_not_stored``.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from api.app_keys import POOL
from api.auth import tenant_id
from api.backlog_wake import wake_parked_backlog
from api.errors import ApiError, invalid_field, not_found
from api.publish import producer_for
from api.responses import json_response
from api.validation import moment_field, page_limit, read_json
from api.webhooks import webhook_or_404
from dispatcher.kafka.producer import ProducerError
from dispatcher.messages.wire import DeliveryTask
from dispatcher.store import backlog, failed_deliveries
from dispatcher.store import events as event_store
from dispatcher.store.attempt_store import Attempt, get_attempt, list_attempts
from dispatcher.store.webhook_store import Webhook

log = structlog.get_logger(__name__)

# One recover call re-enqueues at most this many; call again while it answers this many.
MAX_RECOVER = 10_000
RECOVER_PAGE = 500


def parse_outcome(outcome: str | None) -> str | None:
    """An attempt-log ``outcome`` filter (None: all), or 422."""
    if outcome is not None and outcome not in {"success", "failure"}:
        raise invalid_field("outcome", "outcome must be success or failure", "enum")
    return outcome


async def attempts_page(
    request: web.Request, webhook: Webhook, outcome: str | None, limit: int, cursor: str | None
) -> tuple[list[Attempt], str | None]:
    """One page of ``webhook``'s attempts, newest first, and the next cursor (400 if bad)."""
    try:
        return await list_attempts(
            request.app[POOL],
            tenant_id(request),
            webhook.id,
            outcome=parse_outcome(outcome),
            limit=limit,
            cursor=cursor,
        )
    except ValueError:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API issued") from None


async def list_(request: web.Request) -> web.Response:
    """GET /webhooks/{id}/attempts → ``{"data": [...], "next_cursor": str | null}``."""
    webhook = await webhook_or_404(request)
    limit = page_limit(request)
    attempts, next_cursor = await attempts_page(
        request, webhook, request.query.get("outcome"), limit, request.query.get("cursor")
    )
    return json_response(
        {"data": [attempt.to_json() for attempt in attempts], "next_cursor": next_cursor}
    )


async def _enqueue(request: web.Request, task: DeliveryTask) -> None:
    producer = producer_for(request)
    try:
        await producer.enqueue(task)
    except (ProducerError, KafkaError, TimeoutError) as exc:
        log.warning("redelivery.enqueue_failed", webhook_id=task.webhook_id, error=str(exc))
        raise ApiError(503, "unavailable", "the delivery could not be queued; retry") from None


def _redelivery(task: DeliveryTask) -> DeliveryTask:
    return DeliveryTask(task.webhook_id, task.event, kind="redelivery")


async def attempt_or_404(request: web.Request, webhook: Webhook, raw_id: str) -> Attempt:
    """Attempt ``raw_id`` (the URL's text) of the caller's ``webhook``, or 404."""
    if not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 18:
        raise not_found("attempt")
    attempt = await get_attempt(request.app[POOL], tenant_id(request), webhook.id, int(raw_id))
    if attempt is None:
        raise not_found("attempt")
    return attempt


async def attempt_task(
    request: web.Request, webhook: Webhook, attempt: Attempt
) -> DeliveryTask | None:
    """The delivery ``attempt`` sent (REST retry, portal detail), or None when not stored.

    The stored task when the delivery failed for good or is still parked, otherwise
    rebuilt from the payload store; test events are never stored.
    """
    pool = request.app[POOL]
    task = await backlog.find_task(pool, webhook.id, attempt.event_id)
    if task is None and not attempt.test:
        event = await event_store.get_event(pool, tenant_id(request), attempt.event_id)
        if event is not None and event.topic == attempt.topic:
            task = DeliveryTask(webhook.id, event)
    return task


async def retry_attempt(request: web.Request, webhook: Webhook, raw_id: str) -> str:
    """Queue attempt ``raw_id``'s event again (REST and portal); its event id."""
    attempt = await attempt_or_404(request, webhook, raw_id)
    task = await attempt_task(request, webhook, attempt)
    if task is None:
        raise ApiError(
            404,
            "event_not_stored",
            "this attempt's event is no longer stored: test events cannot be retried, and"
            " events are kept for HOOKLANE_ATTEMPT_RETENTION_DAYS",
            {"event_id": attempt.event_id},
        )
    await _enqueue(request, _redelivery(task))
    trace = task.event.trace
    log.info(
        "redelivery.queued",
        webhook_id=webhook.id,
        event_id=attempt.event_id,
        trace_id=trace.trace_id if trace else None,
    )
    # Parked, the retried delivery joins the backlog: retry its head now, not hours away.
    await wake_parked_backlog(request, webhook.id, "attempt_retry")
    return attempt.event_id


async def retry(request: web.Request) -> web.Response:
    """POST /webhooks/{id}/attempts/{attempt_id}/retry → 202 ``{"event_id", "queued": true}``."""
    webhook = await webhook_or_404(request)
    event_id = await retry_attempt(request, webhook, request.match_info["attempt_id"])
    return json_response({"event_id": event_id, "queued": True}, status=202)


async def recover_since(request: web.Request, webhook: Webhook, since: datetime) -> int:
    """Queue every failed delivery of ``webhook`` since ``since`` again, oldest first.

    Returns how many were queued (REST and portal).
    """
    pool = request.app[POOL]
    producer_for(request)  # 503 before touching anything when there is no broker
    queued = 0
    async with pool.acquire() as conn:
        while queued < MAX_RECOVER:
            failure: ApiError | None = None
            sent: list[int] = []
            async with conn.transaction():
                page = await failed_deliveries.failed_since(
                    conn, webhook.id, since, min(RECOVER_PAGE, MAX_RECOVER - queued), lock=True
                )
                try:
                    for failed in page:
                        # One at a time, in order: the deliveries topic keeps it per webhook.
                        await _enqueue(request, _redelivery(failed.task))
                        sent.append(failed.id)
                except ApiError as exc:
                    failure = exc
                # Whatever was queued is no longer failed, even if a later send failed.
                await failed_deliveries.forget_failed(conn, sent)
            queued += len(sent)
            if failure is not None:
                raise failure
            if not page:
                break
    log.info("redelivery.recovered", webhook_id=webhook.id, queued=queued)
    return queued


async def recover(request: web.Request) -> web.Response:
    """POST /webhooks/{id}/recover ``{"since"}`` → 202 ``{"queued": n}``, oldest first."""
    webhook = await webhook_or_404(request)
    body = await read_json(request, "recover")
    queued = await recover_since(request, webhook, moment_field(body["since"], "/since"))
    return json_response({"queued": queued}, status=202)


def setup_routes(app: web.Application) -> None:
    """Register the attempt log and redelivery routes."""
    app.router.add_get("/webhooks/{id}/attempts", list_)
    app.router.add_post("/webhooks/{id}/attempts/{attempt_id}/retry", retry)
    app.router.add_post("/webhooks/{id}/recover", recover)
