-- What receivers' security teams ask for (issue #26, DESIGN.md §11): custom headers,
-- Ed25519 (`v1a`) signatures, a TLS client certificate and endpoint authentication.
-- Secret material is stored as Fernet tokens (HOOKLANE_SECRET_KEY) like the secret;
-- the plain columns are what reads show.

-- {"<name>": "<value>"} sent with every delivery; NULL: none.
ALTER TABLE webhooks ADD COLUMN headers jsonb;
-- v1: HMAC (secret_ciphertext is the shared secret). v1a: Ed25519, and
-- secret_ciphertext / previous_secret_ciphertext hold the private keys (whsk_...), so
-- the rotation overlap, re-encryption and target versioning work as for v1.
ALTER TABLE webhooks ADD COLUMN signature_scheme text NOT NULL DEFAULT 'v1'
    CHECK (signature_scheme IN ('v1', 'v1a'));
ALTER TABLE webhooks ADD COLUMN public_key text;
-- {"subject", "not_after", "fingerprint_sha256"}; the PEM pair is in the ciphertext.
ALTER TABLE webhooks ADD COLUMN tls_client_certificate jsonb;
ALTER TABLE webhooks ADD COLUMN tls_client_ciphertext bytea;
-- The non-secret members ({"type", "username"} or {"type", "token_url", "client_id",
-- "scope"}); the password, token or client secret is in the ciphertext.
ALTER TABLE webhooks ADD COLUMN auth jsonb;
ALTER TABLE webhooks ADD COLUMN auth_ciphertext bytea;
