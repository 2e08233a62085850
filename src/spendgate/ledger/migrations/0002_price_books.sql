-- 0002: price books. Every version published to Redis is mirrored here by
-- the flusher (immutable, so a version is written once), and each ledger row
-- priced by a book names its version: analysts join prices to charges.

CREATE TABLE IF NOT EXISTS spendgate_price_books (
    version     integer         PRIMARY KEY,
    label       text,
    -- when it was published, by the publishing application's clock
    created_at  timestamptz     NOT NULL,
    -- sha256 of the canonical JSON of config
    digest      text            NOT NULL,
    -- the price book as published (bursar's format)
    config      jsonb           NOT NULL,
    inserted_at timestamptz     NOT NULL DEFAULT clock_timestamp()
);

-- the price book version that priced the charge (deduct), else NULL
ALTER TABLE spendgate_ledger ADD COLUMN IF NOT EXISTS price_version integer;
