-- The attempt log updates a webhook's health columns (last_success_at, last_failure_at,
-- failing_since, consecutive_failures) after every batch of attempts. Those changes
-- must not wake every router and deliverer through ``hooklane_webhooks`` (each would
-- reload the row several times a second for a failing endpoint): notify on inserts,
-- deletes and updates that change anything else.

DROP TRIGGER webhooks_notify ON webhooks;

CREATE TRIGGER webhooks_notify_insert_delete
    AFTER INSERT OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION notify_webhook_change();

CREATE TRIGGER webhooks_notify_update
    AFTER UPDATE ON webhooks
    FOR EACH ROW
    WHEN (
        to_jsonb(OLD) - ARRAY['last_success_at', 'last_failure_at', 'failing_since', 'consecutive_failures']
        IS DISTINCT FROM
        to_jsonb(NEW) - ARRAY['last_success_at', 'last_failure_at', 'failing_since', 'consecutive_failures']
    )
    EXECUTE FUNCTION notify_webhook_change();

-- Recover (``POST /webhooks/:id/recover``) and replay look failed deliveries up by event too.
CREATE INDEX failed_deliveries_event ON failed_deliveries (webhook_id, event_id);

-- How many times a parked delivery was tried, so attempt numbers keep counting.
ALTER TABLE backlog ADD COLUMN attempts integer NOT NULL DEFAULT 0;

-- A scheduler working on a parked webhook holds it until ``leased_until`` (renewed while
-- it works), so others skip it and ``next_attempt_at`` can be moved (e.g. to "now" when
-- the webhook is re-enabled or edited) without two schedulers draining one backlog.
ALTER TABLE parked_webhooks ADD COLUMN leased_until timestamptz;
