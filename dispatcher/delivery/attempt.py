"""One delivery attempt: build the Commenda body, sign it, send it, describe the outcome.

Shared by the deliverer and the API's test trigger so both sign and send identically.
Every attempt carries the event's W3C trace (``traceparent``, and ``tracestate`` when
there is one) with a parent id of its own: the ``hooklane.deliver`` span's when spans
are exported (``dispatcher.ops.tracing``), a fresh one otherwise.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from dispatcher.delivery.asymmetric import sign_v1a_headers
from dispatcher.delivery.client_certificate import ClientCertificate
from dispatcher.delivery.endpoint_auth import EndpointAuth, OAuth2ClientCredentials, authorization
from dispatcher.delivery.failures import DeliveryError
from dispatcher.delivery.http.sender import CertificateSender, Headers, Response, Sender
from dispatcher.delivery.signing import sign_headers
from dispatcher.messages import trace_context
from dispatcher.messages.wire import DeliveryTask, delivery_body
from dispatcher.ops import tracing
from dispatcher.subscription.retry_override import RetryOverride
from dispatcher.values import immutable

if TYPE_CHECKING:
    from opentelemetry.trace import Span

MAX_RECORDED_BODY = 4096


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    """What the deliverer needs to know of a webhook, with its secrets decrypted."""

    id: str
    tenant_id: str
    url: str
    # secrets[0] signs; later entries are rotated-out secrets that are still valid.
    secrets: tuple[str, ...]
    api_version: str = "v1.0"
    state: str = "ENABLED"
    ordering: str = "ordered"
    max_in_flight: int = 1
    # Deliveries per second (``rate_limit``, parsed); None: unlimited.
    rate_limit: float | None = None
    # The ``retry`` override as stored; ``policy.effective_policy`` bounds it.
    retry: RetryOverride = field(default_factory=RetryOverride)
    # The webhook's own request headers (DESIGN.md §11), sent with every attempt.
    headers: Headers = ()
    # A ``v1a`` (Ed25519) key is among ``secrets``: signed by ``sign_v1a_headers``.
    asymmetric: bool = False
    # Sets ``Authorization`` (``auth``); an OAuth token is cached in it.
    auth: EndpointAuth | None = None
    # Presented in the TLS handshake of every attempt (``tls_client_certificate``).
    client_certificate: ClientCertificate | None = None

    @property
    def enabled(self) -> bool:
        """Whether new deliveries may go out."""
        return self.state == "ENABLED"


async def _send(
    sender: Sender, target: WebhookTarget, body: bytes, headers: dict[str, str]
) -> Response:
    if target.client_certificate is None:
        return await sender.send(target.url, body, headers)
    return await cast(CertificateSender, sender).send(
        target.url, body, headers, target.client_certificate
    )


async def _send_authorized(
    sender: Sender,
    target: WebhookTarget,
    body: bytes,
    headers: dict[str, str],
    clock: Callable[[], float],
) -> Response:
    """Send with the target's ``Authorization``; an OAuth token refused with 401 is
    replaced, and the request sent again, once."""
    assert target.auth is not None
    headers["Authorization"] = await authorization(sender, target.auth, clock)
    response = await _send(sender, target, body, headers)
    if response.status == 401 and isinstance(target.auth, OAuth2ClientCredentials):
        refused = headers["Authorization"]
        headers["Authorization"] = await authorization(sender, target.auth, clock, refused)
        response = await _send(sender, target, body, headers)
    return response


@immutable
class AttemptResult:
    """The outcome of one attempt, as recorded in the attempt log."""

    webhook_id: str
    tenant_id: str
    event_id: str
    topic: str
    attempt: int
    attempted_at: float  # unix seconds
    duration_ms: float
    status_code: int | None = None
    retry_after: str | None = None
    error: str | None = None
    error_class: str | None = None
    retriable: bool = True
    response_body: str | None = None
    test: bool = False
    response_headers: Headers = ()
    trace_id: str | None = None  # the event's trace, for log lines

    @property
    def success(self) -> bool:
        """True when the receiver answered 2xx."""
        return self.status_code is not None and 200 <= self.status_code < 300


async def attempt_delivery(
    sender: Sender,
    target: WebhookTarget,
    task: DeliveryTask,
    attempt: int,
    clock: Callable[[], float] = time.time,
    *,
    parked_since: float | None = None,
) -> AttemptResult:
    """Sign and POST ``task`` to ``target`` once; never raises for delivery failures.

    ``parked_since``: when the delivery was parked, for a backlog drain's span.
    """
    event = task.event
    body = delivery_body(event, target.id, target.api_version)
    attempted_at = clock()
    sign = sign_v1a_headers if target.asymmetric else sign_headers
    headers = sign(target.secrets, event.id, int(attempted_at), body)
    if target.headers:
        headers = {**dict(target.headers), **headers}
    trace = event.trace or trace_context.derived(event.tenant_id, event.id)
    tracer = tracing.ACTIVE
    span: Span | None = None
    if tracer is None:
        sent = trace_context.for_attempt(trace)
    else:
        span = tracing.start_deliver(
            tracer, trace, target.url, target.id, event.id, attempt, task.kind
        )
        sent = tracing.context_of(span)
    headers[trace_context.TRACEPARENT] = sent.traceparent
    if sent.tracestate:
        headers[trace_context.TRACESTATE] = sent.tracestate

    def result(duration_ms: float, **outcome: Any) -> AttemptResult:
        attempted = AttemptResult(
            target.id,
            target.tenant_id,
            event.id,
            event.topic,
            attempt,
            attempted_at,
            duration_ms,
            test=task.kind == "test",
            trace_id=trace.trace_id,
            **outcome,
        )
        if span is not None:
            tracing.end_deliver(span, attempted, parked_since)
            if parked_since is not None and attempted.success:
                tracing.drained(tracer, trace, attempted, parked_since)
        return attempted

    started = time.perf_counter()
    try:
        if target.auth is not None:
            response = await _send_authorized(sender, target, body, headers, clock)
        elif target.client_certificate is None:  # the common case: no extra await layer
            response = await sender.send(target.url, body, headers)
        else:
            response = await _send(sender, target, body, headers)
    except DeliveryError as exc:
        return result(
            (time.perf_counter() - started) * 1000,
            error=str(exc) or exc.error_class,
            error_class=exc.error_class,
            retriable=exc.retriable,
        )
    except BaseException:  # cancelled (shutdown) or a bug: the caller records it
        if span is not None:
            span.end()
        raise
    duration_ms = (time.perf_counter() - started) * 1000
    ok = 200 <= response.status < 300
    return result(
        duration_ms,
        status_code=response.status,
        retry_after=response.retry_after,
        error=None if ok else f"HTTP {response.status}",
        error_class=None if ok else "HTTPStatus",
        response_body=response.body[:MAX_RECORDED_BODY].decode("utf-8", "replace"),
        response_headers=response.headers,
    )
