-- Tracing (DESIGN.md §12): each routed event keeps its W3C trace context, so a replay
-- or an attempt retry delivers it in the same trace as its first delivery. NULL for
-- rows written before (their redeliveries get a trace derived from the event id).
ALTER TABLE events ADD COLUMN traceparent text, ADD COLUMN tracestate text;
