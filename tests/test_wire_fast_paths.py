"""The per-delivery fast paths produce exactly the bytes the plain encodings give."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from dispatcher.delivery.signing import sign_headers, signing_key
from dispatcher.messages.trace_context import TraceContext
from dispatcher.messages.wire import DeliveryTask, Event, TaskKind, task_messages

TRACED = TraceContext("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", 'a=1,b="\\x"')

EVENTS = [
    Event("evt_1", "REGISTRATIONS.NEW.SUCCEEDED", "tenant-a", 1700000000, {}),
    Event(
        'e\u00e9"\\\n',
        "T",
        "t\u2603",
        0,
        {"nested": {"list": [1, 2.5, None, True]}, "emoji": "\U0001f600", "k": "\u0001\u001f"},
    ),
    Event("x" * 200, "T", "t", 2**62, {"pad": "y" * 2000}),
    Event("evt_t", "T", "t", 1, {"a": 1}, TraceContext(TRACED.traceparent)),
    Event("evt_s", "T", "t", 1, {"a": 1}, TRACED),
]


@pytest.mark.parametrize("event", EVENTS)
@pytest.mark.parametrize("kind", ["event", "test", "redelivery"])
def test_task_messages_match_encoding_each_task(event: Event, kind: TaskKind) -> None:
    """Encoding the event once gives the same bytes as encoding each task on its own."""
    webhook_ids = ["wh_1", "0f8fad5b-d9cb-469f-a165-70867728950e", 'odd"id\\']
    expected = [DeliveryTask(w, event, kind).to_message() for w in webhook_ids]
    assert task_messages(event, webhook_ids, kind) == expected
    assert [DeliveryTask.from_message(m).webhook_id for m in expected] == webhook_ids
    assert [DeliveryTask.from_message(m).event.trace for m in expected] == [event.trace] * 3


def _reference(secret: str, msg_id: str, timestamp: int, body: bytes) -> tuple[str, str]:
    key = signing_key(secret)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    standard = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return hmac.new(key, body, hashlib.sha256).hexdigest(), "v1," + standard


@pytest.mark.parametrize(
    "secrets",
    [
        ("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",),
        ("plain-secret", "whsec_" + base64.b64encode(b"\x01" * 32).decode()),
    ],
)
def test_cached_keys_sign_every_message_independently(secrets: tuple[str, ...]) -> None:
    """Signing reuses keyed HMACs without carrying state from one message to the next."""
    bodies = [b'{"a": 1}', b"", b"x" * 5000, b'{"a": 1}']
    for index, body in enumerate(bodies):
        headers = sign_headers(secrets, f"msg_{index % 3}", 1614265330 + index, body)
        references = [_reference(s, f"msg_{index % 3}", 1614265330 + index, body) for s in secrets]
        assert headers["Commenda-X-Secret"] == references[0][0]
        assert headers["webhook-signature"] == " ".join(ref[1] for ref in references)
