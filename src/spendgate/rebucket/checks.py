"""What a rebucketing refuses to move, found before it writes anything
(:func:`refusals`): each reason once, with how many keys and one of them.

- **a running deployment**: a flusher's or an event dispatcher's heartbeat
  (the managers keep none: stop them too; each replays its spool on start,
  so stop it only once its spool is empty);
- **a pending hold**: its lease id names the bucket its hold is in, while
  the user's held amounts would move; settle or release it, or let it
  expire (expired ones are purged first);
- **a stream of a bucket that goes** (fewer buckets) that a consumer group
  has not read to the end, or that no group reads (a ledger without
  Postgres), and dead letters there: nothing would read them again;
- **what a sharded layout refuses** (more than one bucket): teams, a
  project's or the platform's weekly or per-minute caps, per-model caps
  and cap actions (``BudgetConfig`` refuses such defaults the same way);
- **a key spendgate does not write** under the deployment's prefix.
"""

from __future__ import annotations

from typing import Any

from spendgate.core.keys import Keys
from spendgate.ops.base import text
from spendgate.rebucket.keyspace import Kind, classify, home_of
from spendgate.rebucket.layout import Layouts
from spendgate.rebucket.mover import scan_keys

__all__ = ["refusals"]

#: why a kind of key is refused on a sharded layout
_SHARDED_REFUSES = {
    Kind.TEAM: "teams (a team's pool is shared by users of every bucket)",
    Kind.SHARED_MODEL_LIMITS: "per-model caps of a project or the platform",
}


class _Reasons:
    """Reasons, each counted once with its first example."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[int, str]] = {}

    def add(self, reason: str, example: str, count: int = 1) -> None:
        seen, first = self._seen.get(reason, (0, example))
        self._seen[reason] = (seen + count, first)

    def lines(self) -> list[str]:
        return [f"{r} ({n}, e.g. {ex})" for r, (n, ex) in self._seen.items()]


async def refusals(redis: Any, at: Layouts, key_prefix: str, now_ms: int) -> list[str]:
    """Why this rebucketing must not run now (empty: it may)."""
    reasons = _Reasons()
    home = home_of(key_prefix)
    sharded = at.to_buckets > 1
    async for batch in scan_keys(redis, key_prefix):
        for key in batch:
            where = home.fullmatch(key)
            rest = "" if where is None else where.group(2).decode()
            kind = classify(rest).kind
            name = text(key)
            if kind is Kind.UNKNOWN:
                reasons.add("keys spendgate does not write", name)
            elif kind is Kind.HEARTBEAT:
                reasons.add("a flusher or event dispatcher is running", name)
            elif sharded and kind in _SHARDED_REFUSES:
                reasons.add(f"a sharded layout refuses {_SHARDED_REFUSES[kind]}", name)
            elif sharded and kind is Kind.SHARED_LIMITS:
                value = await redis.get(key)
                if value is not None and any(text(value).split("|")[2:]):
                    reasons.add(
                        "a sharded layout refuses a project's or the platform's "
                        "weekly or per-minute cap or cap action",
                        name,
                    )
    for keys in {k.base: k for k in (*at.old_homes(), *at.new_homes())}.values():
        pending = await redis.zcount(keys.holds, f"({now_ms}", "+inf")
        if pending:
            reasons.add(
                "pending holds: settle or release them, or let them expire",
                keys.holds,
                pending,
            )
    for keys in at.vanishing():
        await _unread(redis, keys, reasons)
    return reasons.lines()


async def _unread(redis: Any, keys: Keys, reasons: _Reasons) -> None:
    """The streams of a home that goes: read to the end, or refused."""
    for stream in (keys.ledger, keys.events):
        length = await redis.xlen(stream)
        if not length:
            continue
        for group in await redis.xinfo_groups(stream):  # (none: it is copied)
            after = await redis.xrange(
                stream, min=f"({text(group['last-delivered-id'])}", count=1
            )
            if group["pending"] or after:
                reasons.add(
                    "a stream of a bucket that goes is not read to the end "
                    "(run the flusher or the dispatcher until it is)",
                    f"{stream} group {text(group['name'])}",
                )
