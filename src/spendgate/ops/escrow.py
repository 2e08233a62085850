"""Escrow: a project's or the platform's daily or monthly cap on a sharded
deployment. No bucket sees a scope's whole spend, so the root (the scope's
own slot, ``{sg}``) lends the cap out in chunks and a bucket admits only
against what it was lent (CockroachDB's tenant token bucket, TensorZero's
pre-borrow). This module is the root's side: lend (``lua/escrow_lend.lua``)
and take back (``lua/escrow_return.lua``); the key is
:func:`spendgate.core.escrow_keys.loans`'s. Amounts are micro-units.
"""

from __future__ import annotations

from typing import NamedTuple

from spendgate.core import escrow_keys
from spendgate.core.keys import Keys
from spendgate.core.store import Store

__all__ = ["Loan", "give_back", "lend"]


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
