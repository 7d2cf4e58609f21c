-- API keys have a lifecycle (DESIGN.md §13): a name, when they were last used, and
-- the portal links and sessions each one made, so revoking a key ends them at once.
-- Links made by `hooklane portal-link` (an operator, no key) keep api_key_id NULL.

ALTER TABLE api_keys
    ADD COLUMN name         text NOT NULL DEFAULT '',
    ADD COLUMN last_used_at timestamptz;

ALTER TABLE portal_links
    ADD COLUMN api_key_id text REFERENCES api_keys (id) ON DELETE CASCADE;
CREATE INDEX portal_links_api_key ON portal_links (api_key_id) WHERE api_key_id IS NOT NULL;

ALTER TABLE portal_sessions
    ADD COLUMN api_key_id text REFERENCES api_keys (id) ON DELETE CASCADE;
CREATE INDEX portal_sessions_api_key ON portal_sessions (api_key_id)
    WHERE api_key_id IS NOT NULL;
