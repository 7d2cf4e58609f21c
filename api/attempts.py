"""The attempt log and redelivery: ``/webhooks/{id}/attempts`` and ``/webhooks/{id}/recover``.

- ``GET /webhooks/{id}/attempts?outcome&limit&cursor``: newest first, keyset pages.
- ``POST /webhooks/{id}/attempts/{attempt_id}/retry``: send that attempt's event again.
- ``POST /webhooks/{id}/recover`` ``{"since": RFC 3339}``: send every failed delivery
  since then again, oldest first, and remove them from the failed deliveries.

Redeliveries are ``DeliveryTask(kind="redelivery")`` written to the deliveries topic,
keyed by webhook id, so they queue behind the webhook's other deliveries and keep its
ordering rules (and a parked webhook appends them to its backlog).

Limitation: the attempt log keeps no copy of event data, so an attempt can be retried
only while its event is stored with the webhook, i.e. it failed for good (kept in the
failed deliveries) or is still waiting in the parked backlog. Retrying the attempt of
an event that was delivered (or of a test event) answers 404 ``event_not_stored``.
"""

from __future__ import annotations

from datetime import datetime

import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from api.auth import tenant_id
from api.errors import ApiError, invalid_field, not_found
from api.events import producer_for
from api.keys import POOL
from api.responses import json_response
from api.validation import page_limit, read_json
from api.webhooks import webhook_or_404
from dispatcher.attempt_log import get_attempt, list_attempts
from dispatcher.events import DeliveryTask
from dispatcher.producer import ProducerError
from dispatcher.store import backlog, failed_deliveries

log = structlog.get_logger(__name__)

# One recover call re-enqueues at most this many; call again while it answers this many.
MAX_RECOVER = 10_000
RECOVER_PAGE = 500


def _outcome(request: web.Request) -> str | None:
    outcome = request.query.get("outcome")
    if outcome is not None and outcome not in {"success", "failure"}:
        raise invalid_field("outcome", "outcome must be success or failure", "enum")
    return outcome


async def list_(request: web.Request) -> web.Response:
    """GET /webhooks/{id}/attempts → ``{"data": [...], "next_cursor": str | null}``."""
    webhook = await webhook_or_404(request)
    limit = page_limit(request)
    outcome = _outcome(request)
    try:
        attempts, next_cursor = await list_attempts(
            request.app[POOL],
            tenant_id(request),
            webhook.id,
            outcome=outcome,
            limit=limit,
            cursor=request.query.get("cursor"),
        )
    except ValueError:
        raise ApiError(400, "invalid_cursor", "the cursor is not one this API issued") from None
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


async def retry(request: web.Request) -> web.Response:
    """POST /webhooks/{id}/attempts/{attempt_id}/retry → 202 ``{"event_id", "queued": true}``."""
    webhook = await webhook_or_404(request)
    raw_id = request.match_info["attempt_id"]
    if not raw_id.isascii() or not raw_id.isdigit() or len(raw_id) > 18:
        raise not_found("attempt")
    pool = request.app[POOL]
    attempt = await get_attempt(pool, tenant_id(request), webhook.id, int(raw_id))
    if attempt is None:
        raise not_found("attempt")
    task = await backlog.find_task(pool, webhook.id, attempt.event_id)
    if task is None:
        raise ApiError(
            404,
            "event_not_stored",
            "this attempt's event is no longer stored: only deliveries that failed for good"
            " or are still parked can be retried",
            {"event_id": attempt.event_id},
        )
    await _enqueue(request, _redelivery(task))
    log.info("redelivery.queued", webhook_id=webhook.id, event_id=attempt.event_id)
    return json_response({"event_id": attempt.event_id, "queued": True}, status=202)


def _since(value: str) -> datetime:
    try:
        since = datetime.fromisoformat(value)
    except ValueError:
        raise invalid_field("/since", "since must be an RFC 3339 date-time", "format") from None
    if since.tzinfo is None:
        raise invalid_field("/since", "since needs a time zone (e.g. Z or +00:00)", "format")
    return since


async def recover(request: web.Request) -> web.Response:
    """POST /webhooks/{id}/recover ``{"since"}`` → 202 ``{"queued": n}``, oldest first."""
    webhook = await webhook_or_404(request)
    body = await read_json(request, "recover")
    since = _since(body["since"])
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
    return json_response({"queued": queued}, status=202)


def setup_routes(app: web.Application) -> None:
    """Register the attempt log and redelivery routes."""
    app.router.add_get("/webhooks/{id}/attempts", list_)
    app.router.add_post("/webhooks/{id}/attempts/{attempt_id}/retry", retry)
    app.router.add_post("/webhooks/{id}/recover", recover)
