-- 0001: the ledger table, one row per fact, and the indexes of the analytics
-- queries. The table is a public interface: analysts query it directly.
--
-- Amounts are exact numeric(20,6) in the operator's unit (the Redis side keeps
-- integer micro-units; the flusher converts without floats). entry_id is the
-- id spendgate gave the fact (time-ordered hex), unique: the flusher inserts
-- with ON CONFLICT (entry_id) DO NOTHING, so a redelivered entry is a no-op.

CREATE TABLE IF NOT EXISTS spendgate_ledger (
    entry_id        text            PRIMARY KEY,
    -- spend (record_spend), settle (a lease posted), credit (add_credits), ...
    kind            text            NOT NULL,
    -- when the fact happened, by the application's clock: it decides the UTC
    -- day and month the Redis counters charged
    occurred_at     timestamptz     NOT NULL,
    user_id         text            NOT NULL,
    project_id      text,
    model           text,
    amount          numeric(20,6)   NOT NULL CHECK (amount >= 0),
    metadata        jsonb,
    -- token counts when the metadata carried them (input_tokens/prompt_tokens,
    -- output_tokens/completion_tokens), for per-token analytics
    input_tokens    bigint,
    output_tokens   bigint,
    -- the caller's idempotency key, when one was given
    idempotency_key text,
    -- settle only: the lease, its estimate, and whether it settled after expiry
    lease_id        text,
    estimate        numeric(20,6),
    late            boolean         NOT NULL DEFAULT false,
    -- when the flusher inserted the row (end-to-end lag = inserted_at - occurred_at);
    -- clock_timestamp, not now(): the moment of the insert, not of BEGIN
    inserted_at     timestamptz     NOT NULL DEFAULT clock_timestamp()
);

-- Every analytics query is a time window (spendgate report, Analytics): the
-- occurred_at index serves them all. The user and project indexes serve the
-- drill-downs analysts run on one user or project. Each index costs the
-- flusher's inserts, so there is no more than that (a model index can be
-- added by a later migration if model drill-downs on a huge table need it).
CREATE INDEX IF NOT EXISTS spendgate_ledger_occurred_at_idx
    ON spendgate_ledger (occurred_at);
CREATE INDEX IF NOT EXISTS spendgate_ledger_user_idx
    ON spendgate_ledger (user_id, occurred_at);
CREATE INDEX IF NOT EXISTS spendgate_ledger_project_idx
    ON spendgate_ledger (project_id, occurred_at) WHERE project_id IS NOT NULL;
