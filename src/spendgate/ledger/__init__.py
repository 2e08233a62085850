"""The ledger beyond Redis: the stream entries' schema, the flusher that
moves them into Postgres exactly once, the migrations, analytics and
reconcile. asyncpg is imported on first use only.

- ``entries``: the entry schema (fields of ``core.protocol.LEDGER_FIELDS``,
  column types) and the rows an entry becomes
- ``sql``: the staging table and the INSERT statements, derived from it
- ``stream``: the Redis side, one consumer of the stream's group
- ``writer``: the Postgres side, batches inserted with bisection
- ``mover``: one pass, from the stream into Postgres
- ``flusher``: :class:`~spendgate.ledger.flusher.Flusher`, the loop
- ``pg``: asyncpg on first use, connections, error classes
- ``migrations``, ``analytics``, ``reconcile``
"""
