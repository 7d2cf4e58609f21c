-- Event lifecycle (DESIGN.md §8): every routed event, for idempotent ingest and replay.
--
-- One row per (tenant_id, event_id). The router records a poll's events in one
-- statement; a conflict is a duplicate (not routed) unless the row is the same source
-- position read again after a crash (``source`` equal), a claim by ``POST /events``
-- that no router has taken over yet (``source`` NULL), or older than the dedup window.
--
-- Expiry is a batched purge by ``routed_at`` (not daily partitions): a primary key of
-- a partitioned table must include the partition column, so "seen within the window"
-- would become a probe of every day's partition instead of one unique-index lookup.
CREATE SEQUENCE events_seq;

CREATE TABLE events (
    tenant_id     text NOT NULL,
    event_id      text NOT NULL,
    topic         text NOT NULL,
    triggered_at  bigint NOT NULL,
    -- zlib-compressed JSON of the event's ``data`` (the payload store for replay).
    payload       bytea NOT NULL,
    -- "<kafka topic>:<partition>:<offset>" once routed; NULL: claimed by POST /events.
    source        text,
    routed_at     timestamptz NOT NULL DEFAULT now(),
    -- Original order for replay (routed_at ties within one poll).
    seq           bigint NOT NULL DEFAULT nextval('events_seq'),
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX events_replay ON events (tenant_id, routed_at, seq);
CREATE INDEX events_routed ON events (routed_at);

-- A replay is idempotent per request id: a repeat answers the first answer.
CREATE TABLE replays (
    webhook_id  uuid NOT NULL,
    request_id  text NOT NULL,
    queued      integer NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, request_id)
);
CREATE INDEX replays_created ON replays (created_at);

-- Operational topics (DESIGN.md §8): a tenant subscribes a webhook to hear about its
-- other webhooks' trouble. ``dispatcher.operational`` builds these events.
INSERT INTO topics (name, description, schema) VALUES
('HOOKLANE.WEBHOOK.DISABLED',
 'One of your webhooks was disabled (410 Gone, or failing for the auto-disable window).',
 '{"type": "object", "properties": {"webhook_id": {"type": "string"}, "reason": {"type": "string"}, "failing_since": {"type": ["string", "null"], "format": "date-time"}}, "required": ["webhook_id", "reason"], "examples": [{"webhook_id": "3f0c7e52-8d7b-4c1e-9a57-2b1e4a6b9c10", "reason": "the endpoint answered 410 Gone", "failing_since": "2026-01-31T12:00:00Z"}]}'),
('HOOKLANE.WEBHOOK.PARKED',
 'One of your webhooks keeps failing: its deliveries wait in a backlog and are retried on the long schedule.',
 '{"type": "object", "properties": {"webhook_id": {"type": "string"}, "backlog": {"type": "integer", "minimum": 0}, "failing_since": {"type": "string", "format": "date-time"}, "last_error": {"type": ["string", "null"]}}, "required": ["webhook_id", "backlog", "failing_since"], "examples": [{"webhook_id": "3f0c7e52-8d7b-4c1e-9a57-2b1e4a6b9c10", "backlog": 120, "failing_since": "2026-01-31T12:00:00Z", "last_error": "HTTP 503"}]}'),
('HOOKLANE.WEBHOOK.RECOVERED',
 'One of your parked webhooks answers again and its backlog drains.',
 '{"type": "object", "properties": {"webhook_id": {"type": "string"}, "backlog": {"type": "integer", "minimum": 0}, "failing_since": {"type": "string", "format": "date-time"}}, "required": ["webhook_id", "backlog", "failing_since"], "examples": [{"webhook_id": "3f0c7e52-8d7b-4c1e-9a57-2b1e4a6b9c10", "backlog": 120, "failing_since": "2026-01-31T12:00:00Z"}]}'),
('HOOKLANE.DELIVERY.GAVE_UP',
 'A delivery to one of your webhooks was given up after the retry window.',
 '{"type": "object", "properties": {"webhook_id": {"type": "string"}, "event_id": {"type": "string"}, "topic": {"type": "string"}, "attempts": {"type": "integer", "minimum": 0}, "last_error": {"type": ["string", "null"]}}, "required": ["webhook_id", "event_id", "attempts"], "examples": [{"webhook_id": "3f0c7e52-8d7b-4c1e-9a57-2b1e4a6b9c10", "event_id": "83baf345-e6c0-41a8-b5ef-ab2a4d85448c", "topic": "REGISTRATIONS.NEW.SUCCEEDED", "attempts": 14, "last_error": "timeout after 10s"}]}')
ON CONFLICT (name) DO NOTHING;
