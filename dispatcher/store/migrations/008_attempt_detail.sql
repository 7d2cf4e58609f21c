-- Attempt detail (issue #13): what the receiver answered besides status and body, and
-- what kind of failure it was. Both nullable, no default: adding them rewrites nothing,
-- and rows written before this migration simply have no detail.
--
-- response_headers: the first response headers as "Name: value" lines (at most 20,
--   2 KiB; see dispatcher.sender.bound_headers). Plain text keeps the attempt log's
--   binary COPY as cheap as before (no jsonb encoding per row).
-- error_class: a short stable name of the failure (ConnectError, DeliveryTimeout,
--   HTTPStatus, BlockedDestination, InternalError, ...); ``error`` keeps the message.
ALTER TABLE attempts
    ADD COLUMN response_headers text,
    ADD COLUMN error_class text;
