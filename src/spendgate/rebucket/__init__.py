"""Rebucketing: moving a deployment's keys to another bucket count
(``cluster_buckets``), from one bucket to many, many to more, or back.

::

    rebucket/__init__.py  rebucket(): the layout's state, the order of things
    rebucket/layout.py    the old and the new layout: where each key goes
    rebucket/keyspace.py  what a key is, read off its name
    rebucket/checks.py    what it refuses to move (before writing anything)
    rebucket/mover.py     the moves, in one pass over every key
    rebucket/shared.py    project and platform counters: added up, split
    rebucket/report.py    what it did

The deployment is stopped while it runs (every process that uses it: the
calls of a process still running would go to the old layout's keys). It
replays the local spool into the old layout first, checks
(:mod:`spendgate.rebucket.checks`: a refusal writes nothing), writes
``"<from>><to>:<run>"`` to the root's ``layout`` key, purges expired holds,
moves every key (:mod:`~spendgate.rebucket.mover`), and writes ``"<to>"``
there last. Stopped half way, run again with the same configuration and
target, it finishes the same run; after it, start the deployment with
``cluster_buckets`` set to the target.

What moves: each user's keys to the user's new bucket; a charge's refund
record and a finished hold's record too, with a forward where the id
(``~<bucket>``, or none) names another bucket (a refund, a settle, a
release or an extend follows it: ``Reply.MOVED``); an idempotency record
to the bucket of the user its charge or hold names, else copied to every
bucket a user of its old bucket can be in; a project's and the
platform's day and month counters split over the new buckets by their
users' refundable charges (the rest to bucket 0), escrow's loans made what
each counts; cap overrides copied to every bucket.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from spendgate.config import BudgetConfig
from spendgate.core.protocol import Reply
from spendgate.core.shards import layout_key, layout_value, read_layout
from spendgate.errors import (
    ConfigurationError,
    InvalidArgumentError,
    RebucketRefusedError,
)
from spendgate.ops.base import new_id, text
from spendgate.rebucket.checks import connected_managers, refusals
from spendgate.rebucket.layout import Layouts
from spendgate.rebucket.mover import Mover
from spendgate.rebucket.report import RebucketReport

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["MAX_BUCKETS", "RebucketReport", "purge_holds", "rebucket"]

#: the most buckets a deployment may have (``cluster_buckets``'s bound)
MAX_BUCKETS = 1024


async def rebucket(
    config: BudgetConfig,
    to_buckets: int,
    *,
    dry_run: bool = False,
    redis: Redis | None = None,
    clock: Callable[[], datetime] | None = None,
) -> RebucketReport:
    """Move the keys of the deployment ``config`` describes (its
    ``cluster_buckets`` the count they are laid out for) to ``to_buckets``.

    :param dry_run: write nothing; the report counts what would be done and
        lists the refusals
    :param redis: a client to use (as ``BudgetManager``'s), else its own
    :param clock: what a hold's expiry is compared with (as
        ``BudgetManager``'s)
    :raise RebucketRefusedError: what it must not move (nothing changed)
    :raise ConfigurationError: the keys are laid out for another count, or
        the target is not a valid configuration (a sharded one refuses
        some caps)
    :raise InvalidArgumentError: ``to_buckets`` is not an int in 1..1024
    """
    if (
        isinstance(to_buckets, bool)
        or not isinstance(to_buckets, int)
        or not 1 <= to_buckets <= MAX_BUCKETS
    ):
        raise InvalidArgumentError(f"to_buckets must be an int in 1..{MAX_BUCKETS}")
    _target_config(config, to_buckets)
    from spendgate.manager import BudgetManager

    from_buckets = config.cluster_buckets
    at = Layouts(config.key_prefix, from_buckets, to_buckets)
    report = RebucketReport(from_buckets, to_buckets, dry_run)
    running = await connected_managers(config, redis)  # (before ours connects)
    # (not opened with open(): that refuses keys laid out for another count)
    budget = BudgetManager(config, redis=redis, clock=clock)
    try:
        redis = budget.redis
        at_key = layout_key(config.key_prefix)
        report.run = _run_of(await redis.get(at_key), from_buckets, to_buckets)
        if not report.run:
            report.already = True
            return report
        now_ms = budget._now_ms()
        reasons = running + await _spool_reasons(budget, dry_run)
        reasons += await refusals(redis, at, config.key_prefix, now_ms)
        if reasons and not dry_run:
            raise RebucketRefusedError(reasons)
        report.refusals = reasons
        if not dry_run:
            await redis.set(at_key, layout_value(to_buckets, from_buckets, report.run))
            for home in at.old_homes():  # (their held amounts stop counting)
                if await redis.zcount(home.holds, "-inf", now_ms):
                    await purge_holds(budget, home.holds, now_ms)
        await Mover(redis, at, report, config.key_prefix).run()
        if not dry_run:
            await redis.set(at_key, layout_value(to_buckets))
    finally:
        await budget.aclose()
    return report


def _target_config(config: BudgetConfig, to_buckets: int) -> BudgetConfig:
    """The configuration the deployment runs with afterwards (validated:
    a sharded one refuses a project's or the platform's weekly and
    per-minute caps)."""
    try:
        return BudgetConfig.model_validate(
            {**config.model_dump(), "cluster_buckets": to_buckets}
        )
    except (ValidationError, ConfigurationError) as exc:
        raise ConfigurationError(
            f"cluster_buckets={to_buckets} with these settings: {exc}"
        ) from None


def _run_of(layout: Any, from_buckets: int, to_buckets: int) -> str:
    """The run to make or finish, from the root's ``layout`` (absent: laid
    out for the configured count); ``""``: laid out for the target already.

    :raise ConfigurationError: laid out for another count, or another
        rebucketing stopped half way
    """
    configured = str(from_buckets)
    old, new, run = read_layout(layout) or (configured, configured, "")
    if not run:
        if new == str(to_buckets):
            return ""
        if new == configured:
            return new_id(time.time_ns() // 1_000_000)
        raise ConfigurationError(
            f"the keys are laid out for {new} buckets, not the configured "
            f"cluster_buckets={from_buckets}"
        )
    if (old, new) == (configured, str(to_buckets)):
        return run  # (one that stopped half way: finished now)
    raise ConfigurationError(
        f"a rebucketing from {old} to {new} buckets stopped half way: run it "
        f"again with cluster_buckets={old} and {new} as the target"
    )


async def _spool_reasons(budget: Any, dry_run: bool) -> list[str]:
    """Facts this machine spooled for the deployment: replayed into the old
    layout first (not in a dry run); refused if any are left."""
    spool = budget.spool
    if spool is None:
        return []
    if spool.has_leftovers() and not dry_run:
        await spool.replay(budget._replayer.replay_one)
    if spool.has_leftovers() or spool.depth:
        return [f"facts spooled on this machine not replayed yet ({spool.depth})"]
    return []


async def purge_holds(budget: Any, holds: str, now_ms: int) -> None:
    """Purge a home's expired holds (``lua/holds_purge.lua``, a bounded
    batch per call) until none is left."""
    while True:
        reply = await budget._store.run("holds_purge", (holds,), (now_ms,))
        assert int(reply[0]) == Reply.OK
        first = text(reply[2])
        if not first or int(first) > now_ms:
            return
