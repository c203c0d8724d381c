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
    -- The job's input (jobs/kinds.py); what the client sent for its kind.
    input           jsonb NOT NULL,
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

-- Databases created before the column was named for what it holds.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM information_schema.columns
               WHERE table_schema = current_schema() AND table_name = 'jobs' AND column_name = 'payload') THEN
        ALTER TABLE jobs RENAME COLUMN payload TO input;
    END IF;
END $$;

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

-- ---------------------------------------------------------------------------
-- Accounts, auth, credits, billing.

ALTER TABLE users ADD COLUMN IF NOT EXISTS tier text NOT NULL DEFAULT 'free';
ALTER TABLE users ADD COLUMN IF NOT EXISTS disabled_at timestamptz;

-- Rotating refresh tokens: one family per login; reuse of a spent token revokes the family.
CREATE TABLE IF NOT EXISTS refresh_tokens (
    id          uuid PRIMARY KEY,
    user_id     uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    family_id   uuid NOT NULL,
    token_hash  bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz
);
CREATE INDEX IF NOT EXISTS refresh_tokens_family ON refresh_tokens (family_id);

-- Available credits and credits held by running jobs. The CHECKs are the last
-- line of defence: the conditional UPDATEs in jobs/credits.py never get there.
CREATE TABLE IF NOT EXISTS credit_accounts (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    balance    bigint NOT NULL DEFAULT 0 CHECK (balance >= 0),
    reserved   bigint NOT NULL DEFAULT 0 CHECK (reserved >= 0),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Append-only ledger. `amount` is a magnitude; `kind` says how it moved:
--   grant, topup, refund: balance += amount
--   reserve:              balance -= amount, reserved += amount
--   release:              reserved -= amount, balance += amount
--   settle:               reserved -= amount (spent)
-- One row per (job, kind) and per (payment reference, kind): retries and
-- redeliveries can never charge or credit twice.
CREATE TABLE IF NOT EXISTS credit_ledger (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind          text NOT NULL CHECK (kind IN ('grant', 'topup', 'reserve', 'settle', 'release', 'refund')),
    amount        bigint NOT NULL CHECK (amount >= 0),
    balance_after bigint NOT NULL,
    job_id        uuid REFERENCES jobs (id) ON DELETE SET NULL,
    reference     text,
    model         text,
    note          text,
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX IF NOT EXISTS credit_ledger_job_kind ON credit_ledger (job_id, kind) WHERE job_id IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS credit_ledger_reference ON credit_ledger (reference, kind) WHERE reference IS NOT NULL;
CREATE INDEX IF NOT EXISTS credit_ledger_user ON credit_ledger (user_id, id DESC);

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS reserved_credits bigint NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS charged_credits bigint;

CREATE TABLE IF NOT EXISTS audit_log (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    actor_id   uuid,
    action     text NOT NULL,
    target     text,
    ip         text,
    details    jsonb
);
CREATE INDEX IF NOT EXISTS audit_log_actor ON audit_log (actor_id, id DESC);
CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log (action, id DESC);

-- The maintenance sweep expires live jobs by age.
CREATE INDEX IF NOT EXISTS jobs_live_created ON jobs (created_at) WHERE status IN ('queued', 'running');

-- ---------------------------------------------------------------------------
-- Files, batches, completion webhooks.

-- Uploaded and generated files (OpenAI's Files API). The bytes live in the
-- configured storage (local disk or S3-compatible) under `storage_key`.
CREATE TABLE IF NOT EXISTS files (
    -- `file-<uuid7 hex>`: sorts by creation time, so "newest first" and `after` are key scans.
    id             text PRIMARY KEY,
    owner_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    filename       text NOT NULL,
    purpose        text NOT NULL
                   CHECK (purpose IN ('batch', 'batch_output', 'assistants', 'user_data')),
    bytes          bigint NOT NULL,
    sha256         text NOT NULL,
    storage_key    text NOT NULL,
    -- OpenAI's (deprecated but still sent) `status`: uploaded, processed, error.
    status         text NOT NULL DEFAULT 'processed',
    status_details text,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS files_owner ON files (owner_id, id DESC);
CREATE INDEX IF NOT EXISTS files_owner_purpose ON files (owner_id, purpose, id DESC);

-- Batches (OpenAI's Batch API): one row per batch, one job per input line.
CREATE TABLE IF NOT EXISTS batches (
    -- `batch_<uuid7 hex>`.
    id                text PRIMARY KEY,
    owner_id          uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    endpoint          text NOT NULL,
    input_file_id     text NOT NULL,
    completion_window text NOT NULL,
    status            text NOT NULL DEFAULT 'validating'
                      CHECK (status IN ('validating', 'in_progress', 'finalizing', 'completed', 'failed',
                                        'expired', 'cancelling', 'cancelled')),
    metadata          jsonb,
    errors            jsonb,
    callback_url      text,
    output_file_id    text,
    error_file_id     text,
    -- request_counts: lines, and lines that ended (each counted once, in the job's own transaction).
    total             integer NOT NULL DEFAULT 0,
    completed         integer NOT NULL DEFAULT 0,
    failed            integer NOT NULL DEFAULT 0,
    -- Credits held for the whole batch (one ledger reserve row, reference `batch:<id>`).
    reserved_credits  bigint NOT NULL DEFAULT 0,
    charged_credits   bigint NOT NULL DEFAULT 0,
    idempotency_key   text,
    request_hash      bytea,
    -- Whoever validates, fans out or finalizes the batch holds it until then; an expired lease
    -- (a crashed API or maintenance process) lets the maintenance loop resume the step.
    lease_until       timestamptz,
    -- Every line's message was sent (NULL: a fan-out that may have stopped half-way).
    sent_at           timestamptz,
    created_at        timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz NOT NULL,
    in_progress_at    timestamptz,
    finalizing_at     timestamptz,
    completed_at      timestamptz,
    failed_at         timestamptz,
    expired_at        timestamptz,
    cancelling_at     timestamptz,
    cancelled_at      timestamptz
);
CREATE INDEX IF NOT EXISTS batches_owner ON batches (owner_id, id DESC);
CREATE UNIQUE INDEX IF NOT EXISTS batches_idempotency ON batches (owner_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Maintenance looks only at unfinished batches.
CREATE INDEX IF NOT EXISTS batches_live ON batches (status)
    WHERE status IN ('validating', 'in_progress', 'finalizing', 'cancelling');

ALTER TABLE jobs ADD COLUMN IF NOT EXISTS batch_id text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS custom_id text;
ALTER TABLE jobs ADD COLUMN IF NOT EXISTS callback_url text;
CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch_id, status) WHERE batch_id IS NOT NULL;
-- The reconciler's queued jobs outside batches (batch lines are their batch's business).
CREATE INDEX IF NOT EXISTS jobs_queued_single ON jobs (enqueued_at) WHERE status = 'queued' AND batch_id IS NULL;
-- A custom_id appears once per batch: a resumed fan-out can never create a line twice.
CREATE UNIQUE INDEX IF NOT EXISTS jobs_batch_custom_id ON jobs (batch_id, custom_id) WHERE batch_id IS NOT NULL;

-- The signing secret of each user's completion webhooks (Standard Webhooks `whsec_…`).
CREATE TABLE IF NOT EXISTS webhook_secrets (
    user_id    uuid PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    secret     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- ---------------------------------------------------------------------------
-- File processing and search (`file.process` jobs, vector stores, /v1/search).

-- A file for search (`assistants`, `user_data`) is `processing` until its `file.process` job ends:
-- `processed`, or `error` with the reason in `status_details`. `process_job_id` is the job whose
-- outcome the status shows (a reprocessing replaces it; an older job's ending changes nothing).
ALTER TABLE files ADD COLUMN IF NOT EXISTS process_job_id uuid;
-- What processing found: {"type", "pages", "chunks", "tokens", "characters", "model", "dimensions"}.
ALTER TABLE files ADD COLUMN IF NOT EXISTS processed jsonb;

-- The searchable chunks of processed files. A file's chunks are written in one transaction (the
-- one that ends its job), replacing the previous set: a search sees all of a document or none.
CREATE TABLE IF NOT EXISTS file_chunks (
    file_id    text NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    -- The file's owner, copied so every search filters by owner on the chunks themselves.
    owner_id   uuid NOT NULL,
    -- Where the chunk lies in the extracted text: PDF pages (1-based) and character offsets.
    page       integer,
    page_end   integer,
    char_start integer NOT NULL,
    char_end   integer NOT NULL,
    tokens     integer NOT NULL,
    content    text NOT NULL,
    tsv        tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED,
    -- Vectors of any size: each size in use gets its own partial HNSW index over
    -- `embedding::vector(N)` (`jobs/knowledge.ensure_index`), which searches then use.
    dims       integer NOT NULL,
    embedding  vector NOT NULL,
    PRIMARY KEY (file_id, seq)
);
CREATE INDEX IF NOT EXISTS file_chunks_owner ON file_chunks (owner_id, file_id);
CREATE INDEX IF NOT EXISTS file_chunks_tsv ON file_chunks USING gin (tsv);

-- Vector stores (OpenAI's API): named sets of the owner's files, searched together.
CREATE TABLE IF NOT EXISTS vector_stores (
    -- `vs_<uuid7 hex>`.
    id             text PRIMARY KEY,
    owner_id       uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name           text,
    metadata       jsonb,
    -- {"anchor": "last_active_at", "days": N}: the store expires N days after its last use.
    expires_after  jsonb,
    created_at     timestamptz NOT NULL DEFAULT now(),
    last_active_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS vector_stores_owner ON vector_stores (owner_id, id DESC);

CREATE TABLE IF NOT EXISTS vector_store_files (
    vector_store_id text NOT NULL REFERENCES vector_stores (id) ON DELETE CASCADE,
    file_id         text NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    owner_id        uuid NOT NULL,
    -- Up to 16 key/value pairs that search `filters` match on.
    attributes      jsonb NOT NULL DEFAULT '{}',
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vector_store_id, file_id)
);
CREATE INDEX IF NOT EXISTS vector_store_files_file ON vector_store_files (file_id);

-- The version of this file, for readiness checks (`/readyz` is ready while the database is at least
-- the version the code expects, `jobs/db.py` SCHEMA_VERSION). Bump both with every schema change.
CREATE TABLE IF NOT EXISTS schema_version (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    version    integer NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO schema_version (version) VALUES (11)
ON CONFLICT (singleton) DO UPDATE SET version = greatest(schema_version.version, EXCLUDED.version),
                                      applied_at = now();
