-- Tenants, API keys, the topic catalog, webhooks and the attempt log.

CREATE TABLE tenants (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- API keys are stored as SHA-256 hashes; the key itself is shown once at creation.
CREATE TABLE api_keys (
    id          text PRIMARY KEY,
    tenant_id   text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    key_hash    bytea NOT NULL UNIQUE,
    prefix      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
CREATE INDEX api_keys_tenant ON api_keys (tenant_id);

CREATE TABLE topics (
    name         text PRIMARY KEY,
    description  text NOT NULL DEFAULT '',
    schema       jsonb NOT NULL DEFAULT '{"type": "object"}',
    created_at   timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhooks (
    id                    uuid PRIMARY KEY,
    tenant_id             text NOT NULL REFERENCES tenants (id) ON DELETE CASCADE,
    url                   text NOT NULL,
    name                  text,
    topics                text[] NOT NULL,
    state                 text NOT NULL DEFAULT 'ENABLED' CHECK (state IN ('ENABLED', 'DISABLED')),
    api_version           text NOT NULL DEFAULT 'v1.0',
    ordering              text NOT NULL DEFAULT 'ordered' CHECK (ordering IN ('ordered', 'unordered')),
    max_in_flight         integer NOT NULL DEFAULT 1 CHECK (max_in_flight > 0),
    -- Fernet token of the secret (HOOKLANE_SECRET_KEY); never returned after creation.
    secret_ciphertext     bytea NOT NULL,
    secret_preview        text NOT NULL,
    -- The previous secret stays valid (a second signature) until it expires.
    previous_secret_ciphertext  bytea,
    previous_secret_expires_at  timestamptz,
    disabled_reason       text,
    last_success_at       timestamptz,
    last_failure_at       timestamptz,
    failing_since         timestamptz,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhooks_tenant_created ON webhooks (tenant_id, created_at DESC, id DESC);
CREATE INDEX webhooks_topics ON webhooks USING gin (topics);

-- Routers keep an in-memory subscription index fresh through this channel.
CREATE FUNCTION notify_webhook_change() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('hooklane_webhooks', COALESCE(NEW.id, OLD.id)::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER webhooks_notify
    AFTER INSERT OR UPDATE OR DELETE ON webhooks
    FOR EACH ROW EXECUTE FUNCTION notify_webhook_change();

CREATE TABLE attempts (
    id             bigserial PRIMARY KEY,
    webhook_id     uuid NOT NULL,
    tenant_id      text NOT NULL,
    event_id       text NOT NULL,
    topic          text NOT NULL,
    attempt        integer NOT NULL,
    attempted_at   timestamptz NOT NULL,
    outcome        text NOT NULL,         -- success | failure | disabled | blocked | gave_up
    status_code    integer,
    duration_ms    double precision NOT NULL,
    error          text,
    response_body  text,
    test           boolean NOT NULL DEFAULT false
);
CREATE INDEX attempts_webhook ON attempts (webhook_id, id DESC);
CREATE INDEX attempts_time ON attempts (attempted_at);

INSERT INTO topics (name, description, schema) VALUES
('REGISTRATIONS.EXISTING.VALIDATION.FAILED',
 'An existing registration failed validation.',
 '{"type": "object", "properties": {"registration_id": {"type": "string"}, "jurisdiction": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}}, "required": ["registration_id"], "examples": [{"registration_id": "reg_123", "jurisdiction": "US-CA", "reasons": ["tax id mismatch"]}]}'),
('REGISTRATIONS.EXISTING.VALIDATION.SUCCEEDED',
 'An existing registration was validated.',
 '{"type": "object", "properties": {"registration_id": {"type": "string"}, "jurisdiction": {"type": "string"}}, "required": ["registration_id"], "examples": [{"registration_id": "reg_123", "jurisdiction": "US-CA"}]}'),
('REGISTRATIONS.NEW.SUCCEEDED',
 'A new registration was filed and accepted.',
 '{"type": "object", "properties": {"registration_id": {"type": "string"}, "jurisdiction": {"type": "string"}, "registration_number": {"type": "string"}}, "required": ["registration_id"], "examples": [{"registration_id": "reg_456", "jurisdiction": "US-NY", "registration_number": "NY-000123"}]}'),
('REGISTRATIONS.NEW.INVALID',
 'A new registration request was rejected as invalid.',
 '{"type": "object", "properties": {"registration_id": {"type": "string"}, "jurisdiction": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}}, "required": ["registration_id"], "examples": [{"registration_id": "reg_456", "jurisdiction": "US-NY", "reasons": ["missing address"]}]}'),
('EXEMPTION_CERTIFICATES.VERIFICATION.FAILED',
 'An exemption certificate failed verification.',
 '{"type": "object", "properties": {"certificate_id": {"type": "string"}, "customer_id": {"type": "string"}, "reasons": {"type": "array", "items": {"type": "string"}}}, "required": ["certificate_id"], "examples": [{"certificate_id": "cert_1", "customer_id": "cus_1", "reasons": ["expired"]}]}'),
('EXEMPTION_CERTIFICATES.VERIFICATION.SUCCEEDED',
 'An exemption certificate was verified.',
 '{"type": "object", "properties": {"certificate_id": {"type": "string"}, "customer_id": {"type": "string"}}, "required": ["certificate_id"], "examples": [{"certificate_id": "cert_1", "customer_id": "cus_1"}]}'),
('EXEMPTION_CERTIFICATES.EXPIRATION',
 'An exemption certificate expired or is about to.',
 '{"type": "object", "properties": {"certificate_id": {"type": "string"}, "customer_id": {"type": "string"}, "expires_at": {"type": "string", "format": "date-time"}}, "required": ["certificate_id"], "examples": [{"certificate_id": "cert_1", "customer_id": "cus_1", "expires_at": "2027-01-01T00:00:00Z"}]}'),
('NEXUS.THRESHOLD.STATE.ALERT',
 'A state economic-nexus threshold is near or crossed.',
 '{"type": "object", "properties": {"state": {"type": "string"}, "threshold": {"type": "number"}, "current": {"type": "number"}, "percentage": {"type": "number"}}, "required": ["state"], "examples": [{"state": "TX", "threshold": 500000, "current": 410000, "percentage": 82}]}'),
('INCORPORATION_REQUEST.COMPLETED',
 'An incorporation request completed.',
 '{"type": "object", "properties": {"incorporation_request_id": {"type": "string"}, "entity_name": {"type": "string"}, "state": {"type": "string"}}, "required": ["incorporation_request_id"], "examples": [{"incorporation_request_id": "inc_1", "entity_name": "Acme Inc", "state": "DE"}]}');
