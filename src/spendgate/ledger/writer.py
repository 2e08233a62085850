"""The Postgres side of the flusher: one connection, and batches inserted
exactly once.

A batch is copied into the session's staging table and moved into
``spendgate_ledger`` by one ``INSERT ... SELECT ... ON CONFLICT (entry_id) DO
NOTHING`` (:mod:`spendgate.ledger.sql`), in one transaction. When Postgres
refuses the batch as data, the entry at fault is found by bisecting; it is
converted in Python and inserted alone, and reported as refused only when
even that fails.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from spendgate.errors import PoisonEntryError
from spendgate.ledger import sql
from spendgate.ledger.entries import STAGING_COLUMNS, RawFields, entry_to_row
from spendgate.ledger.pg import asyncpg_module, connect, is_data_error

#: an entry that could not be stored: its index in the batch, and why
Refused = tuple[int, str]


class LedgerWriter:
    """Inserts batches of ledger rows over one lazily opened connection.

    :param dsn: the Postgres DSN
    :param auto_migrate: apply missing migrations on connect
    """

    def __init__(self, dsn: str, *, auto_migrate: bool = True) -> None:
        self.dsn = dsn
        self.auto_migrate = auto_migrate
        #: the open connection; ``None`` until first use and after a failure
        self.conn: Any = None

    async def connection(self) -> Any:
        """The connection, opened (migrations applied, staging table created)
        when there is none.

        :raise LedgerUnavailableError: Postgres could not be reached
        """
        conn = self.conn
        if conn is not None and not conn.is_closed():
            return conn
        self.conn = None
        conn = await connect(self.dsn)
        try:
            if self.auto_migrate:
                from spendgate.ledger.migrations import migrate

                await migrate(conn)
            await conn.execute(sql.CREATE_STAGING)
        except BaseException:
            conn.terminate()
            raise
        self.conn = conn
        return conn

    def drop(self) -> None:
        """Abandon the connection (after a failure): the next use reconnects."""
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None

    async def aclose(self) -> None:
        """Close the connection, or cut it when it does not close in time."""
        conn, self.conn = self.conn, None
        if conn is not None:
            try:
                async with asyncio.timeout(5):
                    await conn.close()
            except Exception:
                conn.terminate()

    async def insert(
        self,
        rows: Sequence[tuple[Any, ...]],
        sources: Sequence[tuple[str, RawFields]],
        offset: int = 0,
    ) -> tuple[int, list[Refused]]:
        """Insert staging ``rows`` (of :func:`spendgate.ledger.entries.raw_row`)
        and commit; when Postgres refuses one as data, bisect to find it.

        :param sources: the stream id and fields of every row of the batch
        :param offset: the index of ``rows[0]`` in ``sources``
        :return: the rows inserted (not there before), and the refused ones
        """
        asyncpg = asyncpg_module()
        try:
            return await self._insert_batch(rows), []
        except asyncpg.PostgresError as exc:
            if not is_data_error(exc):
                raise
            if len(rows) == 1:
                return await self._insert_alone(sources[offset][1], offset)
        mid = len(rows) // 2
        left = await self.insert(rows[:mid], sources, offset)
        right = await self.insert(rows[mid:], sources, offset + mid)
        return left[0] + right[0], left[1] + right[1]

    async def _insert_batch(self, rows: Sequence[tuple[Any, ...]]) -> int:
        conn = await self.connection()
        async with conn.transaction():
            await conn.copy_records_to_table(
                sql.STAGING_TABLE, records=rows, columns=STAGING_COLUMNS
            )
            status: str = await conn.execute(sql.INSERT)
        return int(status.rsplit(" ", 1)[-1])

    async def _insert_alone(
        self, fields: RawFields, offset: int
    ) -> tuple[int, list[Refused]]:
        """One entry Postgres refused in bulk (text with NUL, metadata that is
        not JSON, ...): converted and cleaned in Python, and inserted alone."""
        try:
            row = entry_to_row(fields)
            conn = await self.connection()
            status: str = await conn.execute(sql.INSERT_ONE, *row)
        except PoisonEntryError as exc:
            return 0, [(offset, str(exc))]
        except asyncpg_module().PostgresError as exc:
            if not is_data_error(exc):
                raise
            return 0, [(offset, f"{type(exc).__name__}: {exc}")]
        return int(status.rsplit(" ", 1)[-1]), []
