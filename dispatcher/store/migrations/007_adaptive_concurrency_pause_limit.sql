-- Issue #14, phase 2.
--
-- ``concurrency``: the adaptive window of an unordered webhook, reported by its
-- deliverer (at most every few seconds while it changes). Like the health columns of
-- migration 003 it must not wake every router and deliverer through ``hooklane_webhooks``.
ALTER TABLE webhooks ADD COLUMN concurrency integer;

DROP TRIGGER webhooks_notify_update ON webhooks;
CREATE TRIGGER webhooks_notify_update
    AFTER UPDATE ON webhooks
    FOR EACH ROW
    WHEN (
        to_jsonb(OLD) - ARRAY['last_success_at', 'last_failure_at', 'failing_since', 'consecutive_failures', 'concurrency']
        IS DISTINCT FROM
        to_jsonb(NEW) - ARRAY['last_success_at', 'last_failure_at', 'failing_since', 'consecutive_failures', 'concurrency']
    )
    EXECUTE FUNCTION notify_webhook_change();

-- ``backlog_size``: how many deliveries wait in a parked webhook's backlog, so the pause
-- limit (HOOKLANE_PAUSE_MAX_BACKLOG) is checked per append without a count(*) over a
-- backlog of up to a million rows. The append path (``dispatcher.store.backlog``) adds
-- what it inserts; every DELETE from ``backlog``, wherever it comes from, subtracts
-- through the statement trigger below, so no caller can forget to.
ALTER TABLE parked_webhooks ADD COLUMN backlog_size bigint NOT NULL DEFAULT 0;
UPDATE parked_webhooks p SET backlog_size = b.n
    FROM (SELECT webhook_id, count(*) AS n FROM backlog GROUP BY webhook_id) AS b
    WHERE b.webhook_id = p.webhook_id;

CREATE FUNCTION backlog_rows_deleted() RETURNS trigger AS $$
BEGIN
    UPDATE parked_webhooks p SET backlog_size = GREATEST(p.backlog_size - d.n, 0)
        FROM (SELECT webhook_id, count(*) AS n FROM deleted_rows GROUP BY webhook_id) AS d
        WHERE p.webhook_id = d.webhook_id;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER backlog_size_on_delete
    AFTER DELETE ON backlog
    REFERENCING OLD TABLE AS deleted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION backlog_rows_deleted();

-- The counter is bookkeeping, not news: schedulers are not woken when only it changes.
DROP TRIGGER parked_webhooks_notify ON parked_webhooks;
CREATE TRIGGER parked_webhooks_notify_insert_delete
    AFTER INSERT OR DELETE ON parked_webhooks
    FOR EACH ROW EXECUTE FUNCTION notify_parked_change();
CREATE TRIGGER parked_webhooks_notify_update
    AFTER UPDATE ON parked_webhooks
    FOR EACH ROW
    WHEN ((to_jsonb(OLD) - 'backlog_size') IS DISTINCT FROM (to_jsonb(NEW) - 'backlog_size'))
    EXECUTE FUNCTION notify_parked_change();
