-- 0004: plans' free allowances. A charge (spend, settle) that a plan's free
-- allowance paid part of says how much: `amount` stays the whole charge (the
-- spent counters and the caps count it all), `allowance_used` the part the
-- allowance paid, the rest came off the grants and the balance. NULL when
-- the allowance paid nothing. Nullable without a default: adding it
-- rewrites no row.
ALTER TABLE spendgate_ledger ADD COLUMN IF NOT EXISTS allowance_used numeric(20,6);
ALTER TABLE spendgate_ledger DROP CONSTRAINT IF EXISTS spendgate_ledger_allowance_used_check;
ALTER TABLE spendgate_ledger ADD CONSTRAINT spendgate_ledger_allowance_used_check
    CHECK (allowance_used IS NULL OR (allowance_used >= 0 AND allowance_used <= amount));
