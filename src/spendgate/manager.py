"""BudgetManager: the public asyncio API.

A thin facade: the operations live in :mod:`spendgate.ops` (admission,
leases, facts, limits and usage), the round trip and what its failures mean
in :class:`~spendgate.core.store.Store`, the spool and its replay in
:class:`~spendgate.durability.replay.Replayer`. Every state change is one Lua
script, one EVALSHA, one round trip.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from redis.exceptions import RedisClusterException, RedisError

from spendgate.config import BudgetConfig
from spendgate.core.money import limit_micros, signed_micros
from spendgate.core.protocol import NO_CAP
from spendgate.core.scripts import DEFAULT_CAP_CONSTANTS
from spendgate.core.shards import check_layout, keys_for
from spendgate.core.store import ClientState, make_store
from spendgate.durability.replay import Replayer
from spendgate.errors import ConfigurationError
from spendgate.ops.adjust import Corrections
from spendgate.ops.base import Clock
from spendgate.ops.credits import Credits
from spendgate.ops.deduct import Deductions
from spendgate.ops.events import Events
from spendgate.ops.features import Features
from spendgate.ops.lease_context import LeaseContext
from spendgate.ops.limits import UNSET
from spendgate.ops.refunds import Refunds
from spendgate.ops.sync import SyncCalls
from spendgate.ops.team_charges import TeamCharges
from spendgate.ops.team_extend import TeamExtensions
from spendgate.ops.transactions import Transactions

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from spendgate.durability.breaker import CircuitBreaker, NodeBreakers
    from spendgate.durability.spool import Spool
    from spendgate.pricing import Pricing

__all__ = ["UNSET", "BudgetManager", "Clock", "LeaseContext"]


class BudgetManager(
    TeamCharges,
    TeamExtensions,
    SyncCalls,
    Features,
    Deductions,
    Credits,
    Refunds,
    Corrections,
    Transactions,
    Events,
):
    """The budget guard: admission, leases, facts, credits and usage over one
    Redis.

    Events: ``budget.events.on(type, handler)`` is all it takes; the manager
    then delivers events to the handlers while it is open (see
    :mod:`spendgate.ops.events`).

    :param config: the settings; ``BudgetConfig()`` (environment) when omitted
    :param clock: returns the current aware UTC ``datetime``; decides the day
        and month a charge falls in and when holds expire. Defaults to the
        system clock (``time.time_ns``). Injected by tests.
    :param redis: an existing ``redis.asyncio.Redis`` to use instead of
        connecting from ``config`` (it is not closed by :meth:`aclose`; used
        as it is, ``redis_cluster`` or not)
    """

    def __init__(
        self,
        config: BudgetConfig | None = None,
        *,
        clock: Clock | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.config = cfg = config if config is not None else BudgetConfig()
        self._clock = clock
        self._windows = None
        # (None: UTC, the windows' fast path)
        self._zone = (
            None if cfg.window_timezone == "UTC" else ZoneInfo(cfg.window_timezone)
        )
        self._pricing: Pricing | None = None
        self._books = {}
        self._active = None
        self.keys = keys = keys_for(cfg.key_prefix, cfg.cluster_buckets)
        self._max_id = cfg.max_id_length
        self._max_meta = cfg.max_metadata_bytes
        self._retention_ms = cfg.counter_retention_seconds * 1000
        self._defaults = tuple(
            NO_CAP if limit is None else str(limit_micros(limit))
            for limit in cfg.default_caps()
        )
        # The configuration is part of the scripts, not of each call's
        # arguments (see spendgate.core.scripts.configured_source).
        constants = {
            # (sharded: each call's keys are its first key's bucket's)
            "BASE": "" if cfg.cluster_buckets > 1 else keys.base,
            "ENFORCE_BALANCE": "1" if cfg.enforce_balance else "0",
            "MIN_BALANCE": str(signed_micros(cfg.min_balance)),
            "PURGE_MAX": str(cfg.expired_holds_purged_per_call),
            **dict(zip(DEFAULT_CAP_CONSTANTS, self._defaults, strict=True)),
            "WEEKLY": "1" if cfg.weekly_enabled else "0",
            "VELOCITY": "1" if cfg.per_minute_enabled else "0",
            "MINUTE_OVERRIDES": "1" if cfg.per_minute_caps else "0",
            "KILL_SWITCH_MS": str(cfg.kill_switch_seconds * 1000),
            "IDEMPOTENCY_TTL_MS": str(cfg.idempotency_ttl_seconds * 1000),
            "LEDGER_MAXLEN": str(cfg.effective_ledger_maxlen),
            "GRANTS_PER_CALL": str(cfg.grants_per_call),
            "REFUND_WINDOW_MS": str(cfg.refund_window_seconds * 1000),
            "MODEL_CAPS": "1" if cfg.model_caps else "0",
            "CAP_ACTIONS": "1" if cfg.cap_actions else "0",
            "LOW_BALANCE": (
                NO_CAP
                if cfg.low_balance_threshold is None
                else str(signed_micros(cfg.low_balance_threshold))
            ),
        }
        self._model_caps = cfg.model_caps
        self._store = store = make_store(cfg, constants, redis)
        # Durability: facts the store does not take are spooled, and replayed.
        self._replayer = replayer = Replayer(store, self.keys)
        store.keep_fact = replayer.keep
        store.on_open = self._opened

    def _opened(self) -> None:
        """Once the store is opened: replay an earlier process's spool, and
        start delivering events if handlers were registered before."""
        self._replayer.replay_leftovers()
        if self._events is not None:
            self._start_events()

    # -- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> BudgetManager:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Connect and load every script, so each call is one round trip.

        Optional: the manager also opens itself on first use. A Redis that is
        down now is not an error here; calls fail closed until it answers.

        :raise ConfigurationError: the keys are laid out for another
            ``cluster_buckets`` (a rebucketing moved them: spendgate.rebucket)
        """
        await self._store.load_scripts()
        try:
            # (a store that does not answer now is not an error here: its
            # layout is read when it is reached, by the next open)
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await check_layout(
                    self.redis, self.config.key_prefix, self.config.cluster_buckets
                )
        except ConfigurationError:
            await self._close_resources()  # (__aexit__ is not called)
            raise
        self._opened()

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in).

        The event dispatcher stops first (an event it was delivering stays
        pending, delivered again later). A last replay pass gives spooled
        facts a chance to reach Redis; what is still spooled stays on disk
        for the next process.
        """
        if self._sync_loop is not None:
            await self._close_on_sync_loop()
        await self._close_resources()

    async def close(self) -> None:
        """The same as :meth:`aclose` (coreason-budget's name)."""
        await self.aclose()

    async def _close_resources(self) -> None:
        if self._store.state is ClientState.CLOSED:
            return
        await self._stop_following()
        await self._stop_events()
        await self._replayer.aclose()
        await self._store.aclose()

    # -- what the manager stands on ---------------------------------------------

    @property
    def redis(self) -> Redis:
        """The Redis client (opening the manager if needed); with
        ``redis_cluster``, redis-py's ``RedisCluster`` (each key's command to
        its node, SCAN of every master)."""
        self._store.ensure_open()
        assert self._store.client is not None
        return self._store.client

    @property
    def embedded(self) -> bool:
        """Running on the embedded in-process store (known once opened)."""
        return self._store.embedded

    @property
    def spool(self) -> Spool | None:
        """The local spool (``.depth``, ``.oldest_age_seconds``, ``.stats()``);
        ``None`` on the embedded store, which cannot be unreachable."""
        return self._replayer.spool

    @property
    def breaker(self) -> CircuitBreaker | NodeBreakers:
        """The circuit breaker in front of the store (``.state``); on a
        cluster, one per master (``.state``: the worst of them)."""
        return self._store.breakers

    @property
    def pricing(self) -> Pricing:
        """Model prices: the active price book, then this config's overrides
        and LiteLLM's cost map, made on first use (LiteLLM is imported on
        the first lookup). From then on the active book is read every
        second, so an activation anywhere reaches it."""
        if self._pricing is None:
            # Imported on first use: most deployments never price here.
            from spendgate.pricing import Pricing

            self._pricing = Pricing(self.config)
            # the active price book as last read (active_pricing keeps it)
            version = None if self._active is None else self._active[0]
            self._pricing.book = None if version is None else self._books.get(version)
        if self._store.state is not ClientState.CLOSED:
            self._follow_active()
        return self._pricing
