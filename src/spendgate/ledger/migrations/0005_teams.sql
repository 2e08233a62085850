-- 0005: teams. (0004 is the plans' allowance; the numbers only order the
-- files, and a version applied before another is harmless here: this one
-- touches nothing the allowance's does.) The team_id column and its index
-- came with 0003; a charge on a team's pool names its user and its team.
-- A credit to a team's pool (create_team's initial balance, credit_team) is
-- a grant that names the team and no user: the check that every row names
-- its user now allows it.
ALTER TABLE spendgate_ledger DROP CONSTRAINT IF EXISTS spendgate_ledger_user_named;
ALTER TABLE spendgate_ledger ADD CONSTRAINT spendgate_ledger_user_named
    CHECK (user_id IS NOT NULL OR kind = 'adjust' OR team_id IS NOT NULL);

-- Spend by member of a team over a period (analytics' spend_by_team_member).
CREATE INDEX IF NOT EXISTS spendgate_ledger_team_member_idx
    ON spendgate_ledger (team_id, user_id, occurred_at) WHERE team_id IS NOT NULL;
