-- Looking an event up (DESIGN.md §14, GET /events/:id): what happened to it.
--
-- A dead-lettered event that still parsed as an event (unknown topic, data that fails
-- its topic's schema) is kept with the reason, so its owner can see why it went
-- nowhere. Such a row never counts as routed: a corrected event with the same id is
-- routed (see dispatcher.store.events), and replays skip it.
ALTER TABLE events ADD COLUMN dead_letter_reason text;

-- An event's attempts across its webhooks, without reading every attempt of each.
CREATE INDEX attempts_event ON attempts (event_id);
