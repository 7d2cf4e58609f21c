"""Producing a poll's output so that one bad message cannot stop a partition.

``send_all`` writes messages (delivery tasks) and waits for every acknowledgement:

- a batch the broker **refuses for good** (too large, not authorised, invalid: the
  ``REFUSED`` errors) is sent again one message per batch to find which messages it
  was, and those are reported by their owner (the record they came from) with the
  reason, for the caller to dead-letter; the rest of the poll moves on;
- after a refused batch (or a sequence error) the producer is restarted: an
  idempotent producer's sequence numbers have a gap there, which the broker would
  refuse for ever;
- a batch that failed for a **transient** reason (timeouts, leadership changes, lost
  connections) is sent again, alone, with backoff: what was acknowledged already is
  never produced twice. When ``stopping`` is set meanwhile, ``Stopped`` is raised and
  the caller leaves the poll uncommitted (it is read again, possibly duplicating).

``send_dead_letters`` does the same for dead letters; one whose value the dead-letter
topic refuses as too large is written without its value (headers say so), so even
then what was refused leaves a trace.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidTopicError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    PolicyViolationError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnsupportedForMessageFormatError,
)

from dispatcher.kafka.dead_letter import send_dead_letter
from dispatcher.kafka.producer import Producer

log = structlog.get_logger(__name__)

# Errors that sending the same message again cannot cure.
REFUSED: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    InvalidTopicError,
    CorruptRecordException,
    UnsupportedForMessageFormatError,
    PolicyViolationError,
)
TOO_LARGE: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
)
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0


class Stopped(Exception):
    """Transient failures remained when the caller asked to stop."""


def describe(exc: BaseException) -> str:
    """The reason a refused message is dead-lettered with."""
    return f"the broker refused the delivery task: {type(exc).__name__}: {exc}"


async def _backoff(delay: float, stopping: asyncio.Event) -> float:
    """Wait ``delay`` (or until ``stopping``, then raise ``Stopped``); the next delay."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), delay)
    if stopping.is_set():
        raise Stopped
    return min(delay * 2, BACKOFF_MAX_S)


async def send_all(
    producer: Producer,
    topic: str,
    messages: Sequence[tuple[bytes, bytes]],
    owners: Sequence[int],
    stopping: asyncio.Event,
) -> dict[int, str]:
    """Send ``messages`` (``(key, value)``); ``{owner: reason}`` of those refused for good.

    ``owners[i]`` names the record ``messages[i]`` came from. Raises ``Stopped``.
    """
    refused: dict[int, str] = {}
    pending = list(range(len(messages)))
    alone = False
    delay = BACKOFF_MIN_S
    while pending:
        sent = await producer.send_tracked(topic, [messages[i] for i in pending], alone=alone)
        results = await asyncio.gather(*(future for future, _ in sent), return_exceptions=True)
        again: list[int] = []
        transient = False
        restart = False
        for (_, carried), result in zip(sent, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            restart = restart or isinstance(result, (*REFUSED, OutOfOrderSequenceNumber))
            members = [pending[i] for i in carried]
            if isinstance(result, REFUSED) and len(members) == 1:
                refused[owners[members[0]]] = describe(result)
                log.warning("produce.refused", topic=topic, error=describe(result))
            elif isinstance(result, REFUSED):
                alone = True  # find the culprits: one message per batch from now on
                again.extend(members)
            else:
                transient = True
                again.extend(members)
                log.warning("produce.retrying", topic=topic, error=repr(result))
        if restart:
            await producer.restart()
        if transient:
            delay = await _backoff(delay, stopping)
        pending = sorted(again)
    return refused


async def send_dead_letters(
    kafka: AIOKafkaProducer,
    topic: str,
    letters: Sequence[tuple[Any, str]],
    stopping: asyncio.Event,
) -> None:
    """Write each ``(record, reason)`` to the dead-letter ``topic``; raises ``Stopped``."""
    pending = [(record, reason, False) for record, reason in letters]
    delay = BACKOFF_MIN_S
    while pending:
        futures = [
            await send_dead_letter(kafka, topic, record, reason, omit_value=omit)
            for record, reason, omit in pending
        ]
        results = await asyncio.gather(*futures, return_exceptions=True)
        again = []
        transient = False
        for (record, reason, omit), result in zip(pending, results, strict=True):
            if not isinstance(result, BaseException):
                continue
            if isinstance(result, TOO_LARGE) and not omit:
                again.append((record, reason, True))
                continue
            # Anything else is retried: a dead letter is the only trace of its record.
            transient = True
            again.append((record, reason, omit))
            log.error("dead_letter.failed", topic=topic, error=repr(result))
        if transient:
            delay = await _backoff(delay, stopping)
        pending = again
