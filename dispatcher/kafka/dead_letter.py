"""The dead-letter topic: malformed messages, never silently dropped.

A dead letter keeps the original value and key; headers say why, and where it came from.
A record already at the size limit may not fit again with those headers: it is then
kept truncated (``hooklane-truncated-from`` gives the original size) rather than
failing the send, which would stop its partition for good.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import MessageSizeTooLargeError

log = structlog.get_logger(__name__)

# A reason quotes input at times (an unknown field, a bad value): it stays a header.
MAX_REASON = 1000
# What a dead letter too large to send again keeps of the value and of the key.
TRUNCATED_VALUE = 512 * 1024
TRUNCATED_KEY = 1024


def dead_letter_headers(record: Any, reason: str) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: the reason and the original message's origin."""
    return [
        ("hooklane-reason", reason[:MAX_REASON].encode("utf-8", "replace")),
        ("hooklane-source-topic", str(record.topic).encode()),
        ("hooklane-source-partition", str(record.partition).encode()),
        ("hooklane-source-offset", str(record.offset).encode()),
    ]


async def send_dead_letter(
    producer: AIOKafkaProducer, topic: str, record: ConsumerRecord, reason: str
) -> asyncio.Future[Any]:
    """Queue ``record`` for dead-letter ``topic``; await the returned future for the ack."""
    log.warning(
        "dead_letter",
        reason=reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
    value = record.value if record.value is not None else b""
    headers = dead_letter_headers(record, reason)
    future: asyncio.Future[Any]
    try:
        future = await producer.send(topic, value, key=record.key, headers=headers)
    except MessageSizeTooLargeError:
        log.warning("dead_letter.truncated", size=len(value), offset=record.offset)
        future = await producer.send(
            topic,
            value[:TRUNCATED_VALUE],
            key=record.key[:TRUNCATED_KEY] if record.key is not None else None,
            headers=[*headers, ("hooklane-truncated-from", str(len(value)).encode())],
        )
    return future
