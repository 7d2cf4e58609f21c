-- Parking: a webhook whose endpoint keeps failing moves its pending deliveries here, in
-- order, so Kafka offsets advance; a scheduler retries the head on the long schedule.

CREATE TABLE parked_webhooks (
    webhook_id       uuid PRIMARY KEY,
    parked_at        timestamptz NOT NULL DEFAULT now(),
    failing_since    timestamptz NOT NULL,
    failures         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL
);
CREATE INDEX parked_webhooks_due ON parked_webhooks (next_attempt_at);

CREATE TABLE backlog (
    webhook_id   uuid NOT NULL,
    seq          bigserial,
    event_id     text NOT NULL,
    task         jsonb NOT NULL,
    enqueued_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (webhook_id, seq)
);

-- Deliveries given up after the retry window (or non-retriable); kept for replay.
CREATE TABLE failed_deliveries (
    id           bigserial PRIMARY KEY,
    webhook_id   uuid NOT NULL,
    tenant_id    text NOT NULL,
    event_id     text NOT NULL,
    task         jsonb NOT NULL,
    reason       text NOT NULL,
    failed_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX failed_deliveries_webhook ON failed_deliveries (webhook_id, failed_at);

CREATE FUNCTION notify_parked_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hooklane_parked', COALESCE(NEW.webhook_id, OLD.webhook_id)::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER parked_webhooks_notify
    AFTER INSERT OR UPDATE OR DELETE ON parked_webhooks
    FOR EACH ROW EXECUTE FUNCTION notify_parked_change();
