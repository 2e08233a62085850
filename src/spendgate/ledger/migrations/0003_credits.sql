-- 0003: the credits half of the ledger: grants, expiries, refunds and
-- operators' adjustments, and the columns that link them. (The issue called
-- it 0002; that number went to the price books.) It migrates an existing
-- table in place: the new columns are nullable without a default, so adding
-- them rewrites no row, and every row already there satisfies the new checks.
--
-- The sign rule: the sign of an amount is its kind's. `amount` is
-- non-negative for every kind but `adjust`, whose amount is signed (+ raises
-- the scope's counter, - lowers it). So:
--   net spend   = spend + settle - refund (+ adjust, for the scope it names)
--   credits in  = grant + credit      (credit: add_credits before grants)
--   credits out = expire
-- Kinds: spend, settle, credit, grant, expire, refund, adjust. The list of
-- kinds is the protocol's (spendgate.core.protocol.LedgerKind) and is not
-- repeated in a CHECK here: a later kind would make an older flusher refuse
-- (dead-letter) the entries of a newer writer. A kind whose amount may be
-- negative does need a migration: the check below names the signed ones.

ALTER TABLE spendgate_ledger DROP CONSTRAINT IF EXISTS spendgate_ledger_amount_check;
ALTER TABLE spendgate_ledger ADD CONSTRAINT spendgate_ledger_amount_sign
    CHECK (amount >= 0 OR kind = 'adjust');

-- Every row names its user but an adjust of a project's or the global counter,
-- which has none (its scope and project_id say whose counter moved).
ALTER TABLE spendgate_ledger ALTER COLUMN user_id DROP NOT NULL;
ALTER TABLE spendgate_ledger ADD CONSTRAINT spendgate_ledger_user_named
    CHECK (user_id IS NOT NULL OR kind = 'adjust');

-- refund: the entry id of the charge it gives money back for
ALTER TABLE spendgate_ledger ADD COLUMN IF NOT EXISTS link_id text;
-- grant and expire: the grant (a charge's draws are in its metadata)
ALTER TABLE spendgate_ledger ADD COLUMN IF NOT EXISTS grant_id text;
-- a charge on a team's pool: the team
ALTER TABLE spendgate_ledger ADD COLUMN IF NOT EXISTS team_id text;
-- adjust: the scope whose counter moved (user, project, global)
ALTER TABLE spendgate_ledger ADD COLUMN IF NOT EXISTS scope text;
-- adjust: the window whose counter moved, the UTC day (YYYY-MM-DD) of a daily
-- counter or the UTC month (YYYY-MM) of a monthly one. ("window" is a
-- reserved word: quote it.)
ALTER TABLE spendgate_ledger ADD COLUMN IF NOT EXISTS "window" text;

-- The refunds of a charge; a grant's entries; a team's spending over time.
-- Partial: only the rows that have one pay for these indexes on insert.
CREATE INDEX IF NOT EXISTS spendgate_ledger_link_idx
    ON spendgate_ledger (link_id) WHERE link_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spendgate_ledger_grant_idx
    ON spendgate_ledger (grant_id) WHERE grant_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS spendgate_ledger_team_idx
    ON spendgate_ledger (team_id, occurred_at) WHERE team_id IS NOT NULL;
