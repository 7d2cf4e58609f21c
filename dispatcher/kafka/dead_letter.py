"""The dead-letter topic: malformed messages, never silently dropped.

A dead letter keeps the original value and key; headers say why, and where it came from.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from aiokafka import AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError

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
    producer: AIOKafkaProducer,
    topic: str,
    record: ConsumerRecord,
    reason: str,
    *,
    omit_value: bool = False,
) -> asyncio.Future[Any]:
    """Queue ``record`` for dead-letter ``topic``; await the returned future for the ack.

    ``omit_value``: write the headers without the value (``hooklane-value-omitted``),
    for a value the dead-letter topic refuses as too large. A send refused before it
    is queued (aiokafka checks the size itself) comes back as the future's exception.
    """
    log.warning(
        "dead_letter",
        reason=reason,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
    )
    headers = dead_letter_headers(record, reason)
    value = record.value if record.value is not None else b""
    if omit_value:
        headers.append(("hooklane-value-omitted", str(len(value)).encode()))
        value = b""
    try:
        future: asyncio.Future[Any] = await producer.send(
            topic, value, key=record.key, headers=headers
        )
    except KafkaError as exc:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
    return future
