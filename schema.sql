-- Switchyard schema. Idempotent: safe to apply on every start (`switchyard migrate`).
-- pgvector is required (file chunks are stored with their embeddings).

CREATE EXTENSION IF NOT EXISTS vector;

CREATE TABLE IF NOT EXISTS users (
    id            uuid PRIMARY KEY,
    email         text NOT NULL,
    role          text NOT NULL DEFAULT 'user' CHECK (role IN ('user', 'admin')),
    password_hash text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS users_email_key ON users (lower(email));

CREATE TABLE IF NOT EXISTS api_keys (
    id           uuid PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name         text NOT NULL,
    -- The first characters of the secret, shown in listings; the secret itself is never stored.
    prefix       text NOT NULL,
    -- sha256 of the secret: keys are 256-bit random, so a fast hash is enough (passwords use argon2).
    key_hash     bytea NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_user ON api_keys (user_id, created_at DESC);

CREATE TABLE IF NOT EXISTS jobs (
    -- UUIDv7: ids sort by creation time, so "newest first" is an index scan on the key.
    id              uuid PRIMARY KEY,
    owner_id        uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind            text NOT NULL,
    queue           text NOT NULL,
    status          text NOT NULL DEFAULT 'queued'
                    CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    payload         jsonb NOT NULL,
    metadata        jsonb,
    result          jsonb,
    error           jsonb,
    usage           jsonb,
    -- Number of times a worker claimed the job; the claim number fences stale workers.
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 5,
    idempotency_key text,
    request_hash    bytea,
    worker_id       text,
    lease_until     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- Last time a message for this job was sent to the broker (the reconciler re-sends from here).
    enqueued_at     timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
-- "My jobs, newest first", optionally filtered by status or kind.
CREATE INDEX IF NOT EXISTS jobs_owner_id ON jobs (owner_id, id DESC);
CREATE INDEX IF NOT EXISTS jobs_owner_status ON jobs (owner_id, status, id DESC);
CREATE INDEX IF NOT EXISTS jobs_owner_kind ON jobs (owner_id, kind, id DESC);
-- The reconciler only ever looks at live jobs; a partial index stays small with millions of rows.
CREATE INDEX IF NOT EXISTS jobs_live ON jobs (status, enqueued_at) WHERE status IN ('queued', 'running');
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency ON jobs (owner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE IF NOT EXISTS job_attempts (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id         uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt        integer NOT NULL,
    provider       text NOT NULL,
    model          text NOT NULL,
    started_at     timestamptz NOT NULL,
    latency_ms     double precision NOT NULL,
    ttft_ms        double precision,
    outcome        text NOT NULL,
    error_code     text,
    error_message  text,
    usage          jsonb
);
CREATE INDEX IF NOT EXISTS job_attempts_job ON job_attempts (job_id, id);
