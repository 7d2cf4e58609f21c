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
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

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
    producer: AIOKafkaProducer,
    topic: str,
    record: ConsumerRecord,
    reason: str,
    *,
    omit_value: bool = False,
) -> asyncio.Future[Any]:
    """Queue ``record`` for dead-letter ``topic``; await the returned future for the ack.

    ``omit_value``: write the headers without the value (``hooklane-value-omitted``),
    for a value the dead-letter topic refuses as too large. A value over the producer's
    own size limit is cut to ``TRUNCATED_VALUE`` bytes (``hooklane-truncated-from``);
    any other send refused before it is queued comes back as the future's exception.
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
    future: asyncio.Future[Any]
    try:
        try:
            future = await producer.send(topic, value, key=record.key, headers=headers)
        except MessageSizeTooLargeError:
            # Over the producer's own limit (the reason headers pushed it over): keep
            # the beginning, and say how long it was.
            log.warning("dead_letter.truncated", size=len(value), offset=record.offset)
            future = await producer.send(
                topic,
                value[:TRUNCATED_VALUE],
                key=record.key[:TRUNCATED_KEY] if record.key is not None else None,
                headers=[*headers, ("hooklane-truncated-from", str(len(value)).encode())],
            )
    except KafkaError as exc:
        future = asyncio.get_running_loop().create_future()
        future.set_exception(exc)
    return future
