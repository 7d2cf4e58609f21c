"""A ``Sender`` that counts and times every attempt it carries.

It wraps the one HTTP seam, so every attempt of the deliverer (lanes and backlog
scheduler alike) is measured with no change to the delivery code: the attempt outcome
(from the answer or the ``DeliveryError`` subclass), its duration and the requests in
flight. Deliveries (delivered, given up, parked) are not attempts: they are counted
where the policy's outcome is carried out (the worker, its parking, the scheduler).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import cast

from dispatcher.delivery.client_certificate import ClientCertificate
from dispatcher.delivery.failures import BlockedDestination, DeliveryError, DeliveryTimeout
from dispatcher.delivery.http.sender import CertificateSender, Response, Sender
from dispatcher.ops.metrics import DelivererMetrics


class MeteredSender:
    """Delegates to ``inner``; ``close()`` is the inner sender's business."""

    def __init__(self, inner: Sender, metrics: DelivererMetrics) -> None:
        self.inner = inner
        self._metrics = metrics

    async def send(
        self,
        url: str,
        body: bytes,
        headers: Mapping[str, str],
        client_certificate: ClientCertificate | None = None,
    ) -> Response:
        """Send through ``inner``, recording outcome, duration and in-flight."""
        metrics = self._metrics
        metrics.requests_in_flight += 1
        started = time.perf_counter()
        try:
            if client_certificate is None:
                response = await self.inner.send(url, body, headers)
            else:
                inner = cast(CertificateSender, self.inner)
                response = await inner.send(url, body, headers, client_certificate)
        except DeliveryError as exc:
            metrics.duration_failure.observe(time.perf_counter() - started)
            if isinstance(exc, DeliveryTimeout):
                metrics.attempt_timeout.inc()
            elif isinstance(exc, BlockedDestination):
                metrics.attempt_blocked.inc()
            else:  # refused, reset, TLS, malformed answer: the connection failed
                metrics.attempt_connection_error.inc()
            raise
        finally:
            metrics.requests_in_flight -= 1
        elapsed = time.perf_counter() - started
        if response.ok:
            metrics.duration_success.observe(elapsed)
            metrics.attempt_success.inc()
        else:
            metrics.duration_failure.observe(elapsed)
            metrics.attempt_http_error.inc()
        return response
