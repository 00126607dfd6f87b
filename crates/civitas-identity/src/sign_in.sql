ALTER TABLE accounts ADD COLUMN person_id BIGINT;
ALTER TABLE accounts ADD COLUMN email TEXT;
ALTER TABLE accounts ADD COLUMN phone TEXT;
ALTER TABLE accounts ADD COLUMN password_hash TEXT;
ALTER TABLE accounts ADD COLUMN password_changed_ms BIGINT;
ALTER TABLE accounts ADD COLUMN disabled_ms BIGINT;
CREATE UNIQUE INDEX accounts_person ON accounts (person_id);
CREATE TABLE sessions (
    id TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL,
    loa TEXT NOT NULL,
    amr TEXT NOT NULL,
    csrf_secret TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    auth_time_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    expires_ms BIGINT NOT NULL,
    ended_ms BIGINT,
    ended_reason TEXT,
    user_agent TEXT NOT NULL,
    ip TEXT NOT NULL,
    acting_for TEXT
);
CREATE INDEX sessions_account ON sessions (account_id);
CREATE TABLE pending_sign_ins (
    token_hash TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    amr TEXT NOT NULL,
    expires_ms BIGINT NOT NULL
);
CREATE TABLE sign_in_throttle (
    key TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    locked_until_ms BIGINT NOT NULL,
    last_failure_ms BIGINT NOT NULL
);
CREATE TABLE registrations (
    id TEXT PRIMARY KEY,
    person_id BIGINT NOT NULL,
    code_hash TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    sent_to TEXT NOT NULL,
    expires_ms BIGINT NOT NULL,
    verified_ms BIGINT
);
CREATE TABLE totp_secrets (
    account_id TEXT PRIMARY KEY,
    secret BLOB NOT NULL,
    confirmed_ms BIGINT,
    last_step BIGINT NOT NULL
);
CREATE TABLE recovery_codes (
    account_id TEXT NOT NULL,
    code_hash TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    used_ms BIGINT,
    PRIMARY KEY (account_id, code_hash)
);
CREATE TABLE mandates (
    id TEXT PRIMARY KEY,
    grantor_person_id BIGINT NOT NULL,
    grantee_person_id BIGINT NOT NULL,
    scope TEXT NOT NULL,
    valid_from TEXT NOT NULL,
    valid_until TEXT NOT NULL,
    note TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    revoked_ms BIGINT
);
CREATE INDEX mandates_grantor ON mandates (grantor_person_id);
CREATE INDEX mandates_grantee ON mandates (grantee_person_id);
CREATE TABLE dev_mail (
    id TEXT PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    recipient TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL
);
