"""Keeping facts while Redis is away, and giving them back when it returns.

:class:`Replayer` owns one manager's spool: it spools a fact the store did
not take (:meth:`Replayer.keep`), replays the spool in the background until
it is empty, takes over what earlier processes left behind, and makes a last
bounded pass when the manager closes. A replayed fact is the same call as
the first attempt (same entry id, same idempotency key), so a fact that did
reach Redis before the connection broke is answered ``REPLAYED`` and counted
once.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from loguru import logger

from spendgate.core.fact_keys import fact_keys, moved_home, moved_key
from spendgate.core.keys import Keys
from spendgate.core.operations import FACT_OPERATIONS, named_args, positional_args
from spendgate.core.protocol import Reply
from spendgate.core.store import ClientState
from spendgate.durability.spool import Spool, SpooledFact, spool_directory
from spendgate.errors import StorageError

if TYPE_CHECKING:
    from spendgate.core.store import Store

#: why a replay can be refused for good (the fact then goes to the dead letters)
_REPLAY_REFUSALS = {
    Reply.CONFLICT: "idempotency key already used with other arguments",
    Reply.UNKNOWN_LEASE: "unknown lease (never granted, or forgotten)",
    Reply.LEASE_RELEASED: "the lease was released before the settle",
    Reply.UNKNOWN_ENTRY: "no refundable charge of that entry id",
    Reply.REFUND_EXCEEDS: "the refund is above what is left of the charge",
    Reply.UNKNOWN_TEAM: "no such team",
    Reply.NOT_A_MEMBER: "not a member of the team",
}


def _url_identity(url: str) -> str:
    """A Redis URL with the password of its user-info masked: the identity
    every version so far has hashed into the spool folder's name, kept as it
    is so an upgraded process finds the facts its predecessor spooled (the
    name is a hash, so what else the URL holds never shows)."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.netloc.rsplit("@", 1)[1]
        return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
    except (ValueError, IndexError):
        return "<unparseable url>"


class Replayer:
    """The spool of one manager and the task that drains it.

    :param store: the store facts are replayed into
    :param keys: the deployment's keys (a replay rebuilds a fact's KEYS)
    """

    def __init__(self, store: Store, keys: Keys) -> None:
        self._store = store
        self._keys = keys
        self._spool: Spool | None = None
        self._task: asyncio.Task[None] | None = None
        self._leftovers_checked = False

    @property
    def spool(self) -> Spool | None:
        """The local spool, made on first need; ``None`` on the embedded
        store, which cannot be unreachable."""
        if self._spool is None and not self._store.embedded:
            cfg = self._store.config
            directory = spool_directory(
                cfg.spool_path, cfg.key_prefix, self._store_identity()
            )
            self._spool = Spool(directory, cfg.spool_max_entries)
            self._spool.on_append = self._ensure_running
        return self._spool

    def _store_identity(self) -> str:
        # Which Redis the facts belong to (hashed into the folder's name): a
        # spool is only ever replayed into the store its facts were meant for.
        config = self._store.config
        if config.redis_url:
            return _url_identity(config.redis_url)
        pool = getattr(self._store.client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", {}) or {}
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"{where}/{kwargs.get('db', 0)}"

    async def keep(
        self,
        operation: str,
        args: tuple[Any, ...],
        info: Callable[[], dict[str, Any]],
    ) -> bool:
        """Spool a fact the store did not take, durably, by name.

        :return: ``False`` when there is no spool (the embedded store)
        :raise SpoolFullError: the spool is full
        """
        spool = self.spool
        if spool is None:
            return False
        named = named_args(operation, args)
        if "strict" in named:
            # A team charge's replay is a fact already made: recorded whoever
            # is a member by then (see lua/team_record.lua).
            named["strict"] = "0"
        fact = SpooledFact(operation, named, info=info())
        await spool.append(fact)
        return True

    def replay_leftovers(self) -> None:
        """Facts an earlier process spooled and never replayed (it crashed, or
        Redis was still down when it ended): replay them from now on. Runs
        once, on the first call made inside an event loop."""
        if self._leftovers_checked:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return  # opened outside a loop: open() or a spooled fact starts it
        self._leftovers_checked = True
        spool = self.spool
        if spool is not None and spool.has_leftovers():
            self._ensure_running()

    def _ensure_running(self) -> None:
        if self._store.state is ClientState.CLOSED:
            return
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        """Replay the spool every ``spool_replay_interval_seconds`` until the
        folder is empty (new facts start it again)."""
        spool = self._spool
        assert spool is not None
        interval = self._store.config.spool_replay_interval_seconds
        replayed_before = spool.replayed_total
        last_report = time.monotonic()
        while True:
            done = await spool.replay(self.replay_one)
            # Also waits out other live processes' segments: if one of them
            # dies with facts left, this process takes them over.
            if done and spool.depth == 0:
                if spool.replayed_total > replayed_before:
                    logger.info(
                        "spendgate: spool drained, {} facts replayed into the store",
                        spool.replayed_total - replayed_before,
                    )
                return
            if time.monotonic() - last_report >= 10:
                last_report = time.monotonic()
                logger.warning(
                    "spendgate: {} facts spooled, the oldest {:.0f}s ago",
                    spool.depth,
                    spool.oldest_age_seconds or 0,
                )
            await asyncio.sleep(interval)

    async def replay_one(self, fact: SpooledFact) -> str | None:
        """Send one spooled fact again: ``None`` once it is in Redis (applied
        now or before), the reason when Redis refuses it for good."""
        if fact.operation not in FACT_OPERATIONS:
            return f"not a fact: {fact.operation!r}"
        named = fact.args
        plan = named.get("plan")
        if isinstance(plan, str) and plan.startswith("="):
            # Lenient on replay: a user whose plan changed since gets no
            # allowance drawn, rather than the fact refused (lua/_allowance.lua).
            named = {**named, "plan": "~" + plan[1:]}
        reply = await self._replay_call(fact.operation, named)
        if isinstance(reply, str):
            return reply
        code = reply[0]
        if code == Reply.CHARGE_DAY:
            # A team refund of a charge counted in another day (the window
            # time zone changed since): again with that day's team keys.
            day = reply[1].decode() if isinstance(reply[1], bytes) else reply[1]
            reply = await self._replay_call(fact.operation, {**named, "day": day})
            if isinstance(reply, str):
                return reply
            code = reply[0]
        if code == Reply.MOVED:
            # A refund of a charge, or a settle of a finished hold, whose
            # record a rebucketing moved to its user's bucket: again there.
            reply = await self._replay_call(fact.operation, named, moved=reply[1])
            if isinstance(reply, str):
                return reply
            code = reply[0]
        if code in (Reply.OK, Reply.REPLAYED):
            return None
        return _REPLAY_REFUSALS.get(code, f"reply code {code}")

    async def _replay_call(
        self, operation: str, named: dict[str, str | int], moved: Any = None
    ) -> Any:
        """One fact's call, by its named arguments: its reply, or why it
        could not be made (a ``str``). ``moved``: the bucket a refund's
        record was moved to (its first key is there)."""
        try:
            keys = fact_keys(self._keys, operation, named)
            if moved is not None and operation == "settle":
                # (the hold's new bucket; the entry made there, for its refund)
                home = moved_home(self._keys, moved)
                keys = (home.hold(str(named["lease"])),)
                named = {**named, "entry": self._keys.id_in(str(named["entry"]), home)}
            elif moved is not None:
                key, entry = str(named["idempotency_key"]), str(named["entry"])
                keys = (moved_key(self._keys, moved, key, entry), *keys[1:])
            args = positional_args(operation, named)
        except (KeyError, ValueError, StorageError) as exc:
            return f"malformed fact: {exc}"
        try:
            return await self._store.run(operation, keys, args)
        except StorageError as exc:
            return str(exc)

    async def aclose(self) -> None:
        """Stop replaying; a last pass, bounded, gives this process's spooled
        facts a chance to reach Redis. What is left stays on disk for the next
        process."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        spool = self._spool
        if spool is None:
            return
        if spool.own_depth and self._store.state is ClientState.OPENED:
            # A last pass, bounded: closing must not hang on a dead store.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spool.replay(self.replay_one), 5)
        await spool.aclose()
