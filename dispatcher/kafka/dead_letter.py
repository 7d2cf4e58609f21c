"""The dead-letter topic: malformed messages, never silently dropped.

A dead letter keeps the original value and key; headers say why, and where it came from.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord

log = structlog.get_logger(__name__)


def dead_letter_headers(record: Any, reason: str) -> list[tuple[str, bytes]]:
    """Headers of a dead letter: the reason and the original message's origin."""
    return [
        ("hooklane-reason", reason.encode()),
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
    future: asyncio.Future[Any] = await producer.send(
        topic,
        record.value if record.value is not None else b"",
        key=record.key,
        headers=dead_letter_headers(record, reason),
    )
    return future
