"""Escrow: a project's or the platform's daily or monthly cap on a sharded
deployment. No bucket sees a scope's whole spend, so the root (the scope's
own slot, ``{sg}``) lends the cap out in chunks and a bucket admits only
against what it was lent (CockroachDB's tenant token bucket, TensorZero's
pre-borrow). The root lends (``lua/escrow_lend.lua``) and takes back
(``lua/escrow_return.lua``); a bucket deposits a loan in its allowance
(``lua/escrow_deposit.lua``) and gives up what it did not use
(``lua/escrow_reclaim.lua``). Both keep their hash at
:func:`spendgate.core.escrow_keys.loans` of their own keys. Amounts are micro-units.
"""

from __future__ import annotations

from typing import NamedTuple

from spendgate.core import escrow_keys
from spendgate.core.keys import Keys
from spendgate.core.store import Store

__all__ = ["Loan", "deposit", "give_back", "lend", "reclaim"]


class Loan(NamedTuple):
    """What the root lent: ``amount`` now (0: nothing left to lend, nothing
    changed), ``lent`` in all in the window after it (micro-units)."""

    amount: int
    lent: int


async def lend(
    store: Store,
    root: Keys,
    scope: str,
    scope_id: str,
    window_id: str,
    *,
    cap: int,
    shortfall: int,
    chunk: int,
    ttl_ms: int,
    loan_id: str,
) -> Loan:
    """Lend ``max(shortfall, chunk)`` of ``cap``, at most what is not lent
    yet; the same ``loan_id`` answers the same loan again."""
    key = escrow_keys.loans(root, scope, scope_id, window_id)
    reply = await store.run(
        "escrow_lend", (key,), (cap, shortfall, chunk, ttl_ms, loan_id)
    )
    return Loan(int(reply[1]), int(reply[2]))


async def give_back(
    store: Store,
    root: Keys,
    scope: str,
    scope_id: str,
    window_id: str,
    *,
    amount: int,
    return_id: str,
) -> int:
    """Give ``amount`` back to the root (at most what it has lent); the
    same ``return_id`` counts once. Answers what is lent in all after it."""
    key = escrow_keys.loans(root, scope, scope_id, window_id)
    reply = await store.run("escrow_return", (key,), (amount, return_id))
    return int(reply[1])


async def deposit(
    store: Store,
    bucket: Keys,
    scope: str,
    scope_id: str,
    window_id: str,
    *,
    amount: int,
    loan_id: str,
    ttl_ms: int,
) -> int:
    """Add the loan ``loan_id`` to ``bucket``'s allowance (once per id);
    answers the allowance after it."""
    key = escrow_keys.loans(bucket, scope, scope_id, window_id)
    reply = await store.run("escrow_deposit", (key,), (amount, loan_id, ttl_ms))
    return int(reply[1])


async def reclaim(
    store: Store,
    bucket: Keys,
    scope: str,
    scope_id: str,
    window_id: str,
    *,
    spent_key: str,
    reclaim_id: str,
    now_ms: int,
) -> int:
    """Take back what ``bucket`` has not used of its allowance (allowance -
    spent in ``spent_key``, the window's counter, - held, once its holds
    expired by ``now_ms`` are purged); the same
    ``reclaim_id`` takes it once. Answers what was taken, for
    :func:`give_back` to return to the root."""
    key = escrow_keys.loans(bucket, scope, scope_id, window_id)
    held = bucket.held(scope, scope_id)
    args = (reclaim_id, now_ms)
    reply = await store.run("escrow_reclaim", (key, spent_key, held), args)
    return int(reply[1])
