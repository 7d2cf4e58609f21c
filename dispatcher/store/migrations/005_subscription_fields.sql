-- Subscriptions that fit each receiver (issue #14): a payload filter the router applies,
-- a per-endpoint rate limit, per-webhook retry overrides, and the PAUSED state (new
-- events are buffered in the backlog, in order, and delivered once ENABLED again).
-- All optional: NULL means the operator's defaults (every event, unlimited, the
-- HOOKLANE_RETRY_* settings).

ALTER TABLE webhooks ADD COLUMN filter jsonb;
-- {"per_second": n} or {"per_minute": n}, n >= 1 (checked by the API as well).
ALTER TABLE webhooks ADD COLUMN rate_limit jsonb
    CHECK (rate_limit IS NULL OR (
        jsonb_typeof(rate_limit) = 'object'
        AND rate_limit - 'per_second' - 'per_minute' = '{}'::jsonb
        AND (rate_limit ? 'per_second') <> (rate_limit ? 'per_minute')
        AND COALESCE((rate_limit ->> 'per_second')::numeric, (rate_limit ->> 'per_minute')::numeric) >= 1
    ));
-- {"schedule": "1s,5s,1m", "window": "1d"}, as the tenant wrote it (either key optional).
ALTER TABLE webhooks ADD COLUMN retry jsonb;

ALTER TABLE webhooks DROP CONSTRAINT webhooks_state_check;
ALTER TABLE webhooks ADD CONSTRAINT webhooks_state_check
    CHECK (state IN ('ENABLED', 'PAUSED', 'DISABLED'));
