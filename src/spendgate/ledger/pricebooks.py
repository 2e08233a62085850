"""Price book versions mirrored into Postgres (``spendgate_price_books``,
migration 0002), so analysts can join prices to the ledger rows they priced
(``spendgate_ledger.price_version``).

Versions are immutable: each is copied once, by whichever flusher sees it
first (``ON CONFLICT DO NOTHING``); a pass costs one ``GET`` while nothing new
was published.
"""

from __future__ import annotations

import json
from typing import Any

from spendgate.core.keys import Keys
from spendgate.core.windows import from_ms

_INSERT = """
INSERT INTO spendgate_price_books (version, label, created_at, digest, config)
VALUES ($1, $2, $3, $4, $5::jsonb)
ON CONFLICT (version) DO NOTHING
"""


async def mirror_price_books(redis: Any, conn: Any, keys: Keys, known: int) -> int:
    """Copy the versions published since ``known`` into Postgres.

    :param known: the last version this process has mirrored (0 at first)
    :return: the last version mirrored now
    """
    raw = await redis.get(keys.price_next)
    if raw is None or int(raw) <= known:
        return known
    last = int(raw)
    have: int = await conn.fetchval(
        "SELECT coalesce(max(version), 0) FROM spendgate_price_books"
    )
    for version in range(have + 1, last + 1):
        document, meta = await redis.mget(
            keys.price_book(version), keys.price_meta(version)
        )
        if document is None or meta is None:
            continue  # (published between the GET and now: the next pass)
        info = json.loads(meta)
        await conn.execute(
            _INSERT,
            version,
            info.get("label"),
            from_ms(int(info["created_ms"])),
            str(info["digest"]),
            document.decode() if isinstance(document, bytes) else document,
        )
    return last
