"""The ledger beyond Redis: the stream entries' schema, the flusher that
moves them into Postgres exactly once, the migrations, analytics and
reconcile. asyncpg is imported on first use only."""
