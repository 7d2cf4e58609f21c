-- Tenant portal: one-time links and browser sessions. Only SHA-256 hashes of the
-- tokens are stored (both carry 256 random bits), so a database dump opens nothing.

CREATE TABLE portal_links (
    token_hash  bytea PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    -- Set by the one exchange a link allows (an UPDATE ... WHERE used_at IS NULL).
    used_at     timestamptz
);
CREATE INDEX portal_links_expires ON portal_links (expires_at);

CREATE TABLE portal_sessions (
    token_hash  bytea PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX portal_sessions_expires ON portal_sessions (expires_at);
