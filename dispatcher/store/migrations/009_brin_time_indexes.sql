-- Issue 12 (performance): the time indexes of the two hot tables become BRIN.
--
-- ``attempts`` gets a row per delivery attempt (COPY) and ``events`` a row per routed
-- event, so every B-tree on them is maintained at the delivery rate. ``attempts_time``
-- and ``events_routed`` serve only range scans by time: the hourly purges
-- (``attempted_at < …``, ``routed_at < …``) and the status page's attempts of the last
-- minute (``attempted_at > now() - 60 s``). Both columns grow with insertion order, which
-- is what BRIN is for: one summary (min/max) per 32 heap pages (256 KB) instead of an entry per
-- row, nearly free to maintain, and those scans read the few matching page ranges.
-- ``autosummarize`` lets autovacuum summarise the newest ranges as they fill (an
-- unsummarised range is simply always read, so results never depend on it).
DROP INDEX attempts_time;
CREATE INDEX attempts_time ON attempts USING brin (attempted_at)
    WITH (pages_per_range = 32, autosummarize = on);

DROP INDEX events_routed;
CREATE INDEX events_routed ON events USING brin (routed_at)
    WITH (pages_per_range = 32, autosummarize = on);
