"""What a rebucketing refuses to move, found before it writes anything
(:func:`refusals`): each reason once, with how many keys and one of them.

- **a running deployment**: a manager's connection to the deployment's
  Redis (every master of a cluster: ``CLIENT LIST``, the connections named
  :func:`~spendgate.core.connection.client_name`; not where the server
  does not let it list them, logged), a flusher's or an event dispatcher's
  heartbeat (each replays its spool on start, so stop it only once its
  spool is empty);
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

from loguru import logger
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from spendgate.config import BudgetConfig
from spendgate.core.connection import client_for, client_name
from spendgate.core.keys import Keys
from spendgate.ops.base import text
from spendgate.rebucket.keyspace import Kind, classify, home_of
from spendgate.rebucket.layout import Layouts
from spendgate.rebucket.mover import scan_keys

__all__ = ["connected_managers", "refusals"]

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


async def connected_managers(config: BudgetConfig, redis: Any = None) -> list[str]:
    """The refusal when managers of the deployment are connected to its
    Redis (to any master of a cluster), else none. Asked on a connection of
    its own (not named as theirs), else through ``redis``; on the embedded
    store, not at all (no other process reaches it)."""
    client = redis
    if config.redis_url:
        client = client_for(
            config.redis_url,
            cluster=config.redis_cluster,
            socket_timeout=30,
            socket_connect_timeout=5,
        )
    if client is None:
        return []
    try:
        if isinstance(client, RedisCluster):
            found = await client.client_list(target_nodes=RedisCluster.PRIMARIES)
        else:
            found = await client.client_list()
    except ResponseError as exc:  # (CLIENT LIST not allowed: a managed Redis)
        logger.warning(
            "spendgate: could not list the clients of Redis ({}): make sure no "
            "manager of the deployment runs",
            exc,
        )
        return []
    finally:
        if client is not redis:
            await client.aclose()
    name = client_name(config.key_prefix)
    lists = found.values() if isinstance(found, dict) else [found]
    named = [
        c
        for clients in lists
        for c in clients
        # (not the connection asking, should it be named so)
        if c.get("name") == name and c.get("cmd") != "client|list"
    ]
    if not named:
        return []
    return [
        f"managers of the deployment are connected (stop them first): "
        f"{len(named)} connections named {name}, e.g. from {named[0].get('addr')}"
    ]
