"""BudgetManager: the public asyncio API.

Every state change is one Lua script, one EVALSHA, one round trip; Python
checks the input, builds the arguments, and maps the script's reply to a
value or an error in one place (:meth:`BudgetManager._refusal` and friends).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from types import TracebackType
from typing import TYPE_CHECKING, Any

from loguru import logger
from redis import exceptions as redis_errors
from redis.asyncio import Redis

from spendgate.config import BudgetConfig, redact_url
from spendgate.core.connection import connect
from spendgate.core.ids import (
    check_id,
    check_model,
    check_optional_id,
    encode_metadata,
    user_id_of,
)
from spendgate.core.keys import Keys, fact_keys
from spendgate.core.money import (
    MAX_MICROS,
    charge_micros,
    credit_micros,
    from_micros,
    limit_micros,
)
from spendgate.core.protocol import (
    FACT_OPERATIONS,
    WINDOW_NAMES,
    Reply,
    named_args,
    positional_args,
)
from spendgate.core.scripts import DEFAULT_CAP_CONSTANTS, Scripts
from spendgate.core.windows import Windows, from_ms, to_ms, windows_at
from spendgate.durability.breaker import BreakerState, CircuitBreaker
from spendgate.durability.spool import Spool, SpooledFact, spool_directory
from spendgate.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    IdempotencyConflictError,
    InvalidArgumentError,
    LeaseStateError,
    Scope,
    StorageError,
)
from spendgate.models import Lease, Limits, ScopeUsage, SpendRecord, WindowUsage

if TYPE_CHECKING:
    from spendgate.pricing.catalog import Pricing

Clock = Callable[[], datetime]

OK, REFUSED, REPLAYED, CONFLICT = (
    Reply.OK,
    Reply.REFUSED,
    Reply.REPLAYED,
    Reply.CONFLICT,
)
UNKNOWN_LEASE, LEASE_RELEASED = Reply.UNKNOWN_LEASE, Reply.LEASE_RELEASED
LEASE_SETTLED = Reply.LEASE_SETTLED

# Errors that mean "the store did not answer": admission fails closed (or
# open), facts are spooled. Any other Redis error is a bug and is raised.
_UNAVAILABLE = (
    redis_errors.ConnectionError,
    redis_errors.TimeoutError,
    TimeoutError,
    ConnectionError,
    OSError,
)
_UNAVAILABLE_REPLIES = (
    "OOM",
    "READONLY",
    "LOADING",
    "MASTERDOWN",
    "BUSY",
    "CLUSTERDOWN",
)


#: why a replay can be refused for good
_REPLAY_REFUSALS = {
    CONFLICT: "idempotency key already used with other arguments",
    UNKNOWN_LEASE: "unknown lease (never granted, or forgotten)",
    LEASE_RELEASED: "the lease was released before the settle",
}


class ClientState(Enum):
    #: created, not opened yet (it opens on first use)
    UNOPENED = 1
    #: usable
    OPENED = 2
    #: closed for good
    CLOSED = 3


class _Unset(Enum):
    UNSET = 0


#: "leave this limit as it is" in :meth:`BudgetManager.set_limits`
UNSET = _Unset.UNSET


def _new_id(now_ms: int) -> str:
    # Time-ordered and unique across processes: 12 hex digits of ms, 16 random
    # (one hex() of both: formatting the ms as "{:012x}" costs as much).
    return (now_ms.to_bytes(6, "big") + os.urandom(8)).hex()


def _fingerprint(*parts: object) -> str:
    # A list, not a generator: join() builds one from a generator anyway.
    text = "\x1f".join(["" if p is None else str(p) for p in parts])
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def _unavailable(exc: BaseException) -> BudgetUnavailableError:
    error = BudgetUnavailableError(f"{type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class BudgetManager:
    """The budget guard: admission, leases, facts and usage over one Redis.

    :param config: the settings; ``BudgetConfig()`` (environment) when omitted
    :param clock: returns the current aware UTC ``datetime``; decides the day
        and month a charge falls in and when holds expire. Defaults to the
        system clock (``time.time_ns``). Injected by tests.
    :param redis: an existing ``redis.asyncio.Redis`` to use instead of
        connecting from ``config`` (it is not closed by :meth:`aclose`)
    """

    def __init__(
        self,
        config: BudgetConfig | None = None,
        *,
        clock: Clock | None = None,
        redis: Redis | None = None,
    ) -> None:
        self.config = config if config is not None else BudgetConfig()
        self._clock = clock
        self._owns_client = redis is None
        self._client: Redis | None = redis
        self._scripts: Scripts | None = None
        self.embedded = False
        self._state = ClientState.UNOPENED
        self._store_down = False
        self._windows: Windows | None = None
        self._pricing: Pricing | None = None
        # Durability: the breaker guards every call, the spool (made on first
        # need) keeps facts Redis did not take, the replayer drains it.
        self._breaker = CircuitBreaker(
            self.config.breaker_failure_threshold, self.config.breaker_reset_seconds
        )
        self._spool: Spool | None = None
        self._replayer: asyncio.Task[None] | None = None
        self._failing_open = False
        self._leftovers_checked = False

        cfg = self.config
        self.keys = Keys(cfg.key_prefix)
        self._max_id = cfg.max_id_length
        self._max_meta = cfg.max_metadata_bytes
        self._retention_ms = cfg.counter_retention_seconds * 1000
        # The configuration is part of the scripts, not of each call's
        # arguments (see spendgate.core.scripts.configured_source).
        self._defaults = defaults = tuple(
            "-1" if limit is None else str(limit_micros(limit))
            for limit in (
                cfg.daily_user_limit,
                cfg.monthly_user_limit,
                cfg.daily_project_limit,
                cfg.monthly_project_limit,
                cfg.daily_global_limit,
                cfg.monthly_global_limit,
            )
        )
        self._script_constants = {
            "BASE": self.keys.base,
            "ENFORCE_BALANCE": "1" if cfg.enforce_balance else "0",
            "MIN_BALANCE": str(_signed_micros(cfg.min_balance)),
            "PURGE_MAX": str(cfg.expired_holds_purged_per_call),
            **dict(zip(DEFAULT_CAP_CONSTANTS, defaults, strict=True)),
            "IDEMPOTENCY_TTL_MS": str(cfg.idempotency_ttl_seconds * 1000),
            "LEDGER_MAXLEN": str(cfg.effective_ledger_maxlen),
        }
        if redis is not None:
            self._scripts = Scripts(redis, self._script_constants)

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
        """
        scripts = self._ensure_open()
        try:
            await scripts.load_all()
        except _UNAVAILABLE as exc:
            self._mark_down(exc)
        self._replay_leftovers()

    async def aclose(self) -> None:
        """Close the connection pool (unless the client was passed in).

        A last replay pass gives spooled facts a chance to reach Redis; what
        is still spooled stays on disk for the next process.
        """
        if self._state is ClientState.CLOSED:
            return
        await self._close_spool()
        self._state = ClientState.CLOSED
        if self._client is not None and self._owns_client:
            await self._client.aclose()

    def _ensure_open(self) -> Scripts:
        if self._state is ClientState.OPENED and self._scripts is not None:
            return self._scripts
        if self._state is ClientState.CLOSED:
            raise RuntimeError("Cannot reopen a BudgetManager once it has been closed.")
        if self._client is None:
            self._client, self.embedded = connect(self.config)
            if not self.embedded:
                logger.info(
                    "spendgate: using Redis at {}", redact_url(self.config.redis_url)
                )
        if self._scripts is None:
            # Pipelining only on a client of our own: a caller's client may
            # be shared, or not a plain redis-py one.
            pipelining = self._owns_client and not self.embedded
            self._scripts = Scripts(
                self._client,
                self._script_constants,
                pipelining=pipelining and self.config.redis_pipelining,
            )
        self._state = ClientState.OPENED
        self._replay_leftovers()
        return self._scripts

    @property
    def redis(self) -> Redis:
        """The Redis client (opening the manager if needed)."""
        self._ensure_open()
        assert self._client is not None
        return self._client

    @property
    def pricing(self) -> Pricing:
        """Model prices from this config's overrides and LiteLLM's cost map,
        made on first use (LiteLLM is imported on the first lookup)."""
        if self._pricing is None:
            # Imported on first use: most deployments never price here.
            from spendgate.pricing.catalog import Pricing

            self._pricing = Pricing(self.config)
        return self._pricing

    # -- time ----------------------------------------------------------------

    def _now_ms(self) -> int:
        if self._clock is None:
            return time.time_ns() // 1_000_000
        return to_ms(self._clock())

    def _windows_at(self, now_ms: int) -> Windows:
        w = self._windows
        if w is None or not (w.day_start_ms <= now_ms < w.day_end_ms):
            w = self._windows = windows_at(now_ms)
        return w

    # -- calling scripts -------------------------------------------------------

    def _mark_down(self, exc: BaseException) -> None:
        if not self._store_down:
            self._store_down = True
            logger.warning(
                "spendgate: budget store unreachable ({}: {})", type(exc).__name__, exc
            )

    def _mark_up(self) -> None:
        if self._store_down:
            self._store_down = False
            self._failing_open = False
            logger.info("spendgate: budget store reachable again")

    async def _run(
        self,
        script_name: str,
        keys: tuple[str, ...],
        args: tuple[Any, ...],
        *,
        fail_open: bool = False,
        spool_info: Callable[[], dict[str, Any]] | None = None,
    ) -> Any:
        """One EVALSHA. Store failures become :class:`BudgetUnavailableError`,
        unless the call says what to do instead (in this coroutine, not a
        wrapper around it: each await level costs the hot path):

        :param fail_open: an admission: when the store is unavailable and
            ``fail_open`` is configured, admit (return ``None``)
        :param spool_info: a fact: when the store does not take it, the exact
            call is spooled (durably) and ``None`` returned (replaying it is
            idempotent); called for what the spool records beside the call
        :raise SpoolFullError: a fact could not be spooled
        """
        scripts = self._ensure_open()
        breaker = self._breaker
        failure: BudgetUnavailableError
        try:
            if breaker.state is not BreakerState.CLOSED and not breaker.allow():
                raise BudgetUnavailableError(
                    "circuit breaker open after repeated failures"
                )
            # One EVALSHA with the registered SHA, the hot path's only await.
            sha = getattr(scripts, script_name).sha
            try:
                reply = await scripts.send("EVALSHA", sha, len(keys), *keys, *args)
            except redis_errors.NoScriptError:
                reply = await scripts.reload_and_call(script_name, keys, args)
        except BudgetUnavailableError as exc:
            failure = exc
        except redis_errors.ResponseError as exc:
            if not str(exc).startswith(_UNAVAILABLE_REPLIES):
                breaker.success()
                raise StorageError(f"{script_name} failed: {exc}") from exc
            breaker.failure()
            self._mark_down(exc)
            failure = _unavailable(exc)
        except redis_errors.MaxConnectionsError as exc:
            # The pool is exhausted: the client is busy, the store is not down.
            breaker.abandon()
            failure = _unavailable(exc)
        except _UNAVAILABLE as exc:
            breaker.failure()
            self._mark_down(exc)
            failure = _unavailable(exc)
        except BaseException:
            breaker.abandon()  # cancelled: the outcome is unknown
            raise
        else:
            breaker.success()
            if self._store_down:
                self._mark_up()
            return reply
        if spool_info is not None:
            spool = self._get_spool()
            if spool is None:
                raise failure
            operation = script_name.removeprefix("lua_")
            named = named_args(operation, args)
            await spool.append(SpooledFact(operation, named, info=spool_info()))
            return None
        if fail_open and self.config.fail_open:
            if not self._failing_open:  # once per outage, not per request
                self._failing_open = True
                logger.warning(
                    "spendgate: store unavailable, admitting (fail_open=True)"
                )
            return None
        raise failure

    # -- durability: spool and breaker ---------------------------------------------

    @property
    def spool(self) -> Spool | None:
        """The local spool (``.depth``, ``.oldest_age_seconds``, ``.stats()``);
        ``None`` on the embedded store, which cannot be unreachable."""
        return self._get_spool()

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker in front of the store (``.state``)."""
        return self._breaker

    def _get_spool(self) -> Spool | None:
        if self._spool is None and not self.embedded:
            cfg = self.config
            directory = spool_directory(
                cfg.spool_path, cfg.key_prefix, self._store_identity()
            )
            self._spool = Spool(directory, cfg.spool_max_entries)
            self._spool.on_append = self._ensure_replayer
        return self._spool

    def _store_identity(self) -> str:
        # Which Redis the facts belong to, without secrets: a spool is only
        # ever replayed into the store its facts were meant for.
        if self.config.redis_url:
            return redact_url(self.config.redis_url)
        pool = getattr(self._client, "connection_pool", None)
        kwargs = getattr(pool, "connection_kwargs", {}) or {}
        where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        return f"{where}/{kwargs.get('db', 0)}"

    def _replay_leftovers(self) -> None:
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
        spool = self._get_spool()
        if spool is not None and spool.has_leftovers():
            self._ensure_replayer()

    def _ensure_replayer(self) -> None:
        if self._state is ClientState.CLOSED:
            return
        if self._replayer is None or self._replayer.done():
            self._replayer = asyncio.get_running_loop().create_task(self._replay_loop())

    async def _replay_loop(self) -> None:
        """Replay the spool every ``spool_replay_interval_seconds`` until the
        folder is empty (new facts start it again)."""
        spool = self._spool
        assert spool is not None
        interval = self.config.spool_replay_interval_seconds
        replayed_before = spool.replayed_total
        last_report = time.monotonic()
        while True:
            done = await spool.replay(self._replay_one)
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

    async def _replay_one(self, fact: SpooledFact) -> str | None:
        """Send one spooled call again: ``None`` once it is in Redis (applied
        now or before), the reason when Redis refuses it for good."""
        operation = fact.operation
        if operation not in FACT_OPERATIONS:
            return f"not a fact operation: {operation!r}"
        keys = fact_keys(self.keys, operation, fact.args)
        args = positional_args(operation, fact.args)
        try:
            reply = await self._run(f"lua_{operation}", keys, args)
        except StorageError as exc:
            return str(exc)
        code = reply[0]
        if code in (OK, REPLAYED):
            return None
        return _REPLAY_REFUSALS.get(code, f"reply code {code}")

    async def _close_spool(self) -> None:
        task, self._replayer = self._replayer, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        spool = self._spool
        if spool is None:
            return
        if spool.own_depth and self._state is ClientState.OPENED:
            # A last pass, bounded: closing must not hang on a dead store.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(spool.replay(self._replay_one), 5)
        await spool.aclose()

    def _refusal(
        self,
        reply: list[Any],
        user_id: str,
        project_id: str | None,
        requested: int,
        windows: Windows,
    ) -> BudgetExceededError:
        _, index, window_code, limit, spent, held = reply
        scope: Scope
        if index == 1:
            scope, scope_id = "user", user_id
        elif index == 2 and project_id is not None:
            scope, scope_id = "project", project_id
        else:
            scope, scope_id = "global", None
        window = WINDOW_NAMES[window_code]
        resets_at = None
        if window == "daily":
            resets_at = from_ms(windows.day_end_ms)
        elif window == "monthly":
            resets_at = from_ms(windows.month_end_ms)
        return BudgetExceededError(
            scope=scope,
            scope_id=scope_id,
            window=window,
            limit=from_micros(limit),
            spent=from_micros(spent),
            requested=from_micros(requested),
            resets_at=resets_at,
            held=from_micros(held),
        )

    def _admission_args(
        self,
        now_ms: int,
        w: Windows,
        requested: int,
        user_id: str,
        project_id: str | None,
    ) -> tuple[Any, ...]:
        """ARGV[1..6] of check.lua and reserve.lua."""
        return (now_ms, w.day, w.month, requested, user_id, project_id or "")

    def _fact_head(self, now_ms: int, amount: int) -> tuple[Any, ...]:
        """ARGV[1..6] of record.lua and settle.lua: now, the day and month
        with their counters' TTLs, and the amount. Built here once for both;
        callers add their own with ``+`` (a tuple concatenation, cheaper than
        star-unpacking on the hot path)."""
        # Counter TTLs are relative to our clock: Redis's clock plays no part.
        w = self._windows_at(now_ms)
        retain_ms = self._retention_ms - now_ms
        return (
            now_ms,
            w.day,
            w.day_end_ms + retain_ms,
            w.month,
            w.month_end_ms + retain_ms,
            amount,
        )

    # -- admission ---------------------------------------------------------------

    async def check_availability(
        self, user_id: Any, project_id: str | None = None, estimated_cost: Any = 0
    ) -> bool:
        """May ``user`` spend ``estimated_cost`` now? Changes nothing.

        The argument order is coreason-budget's. ``user_id`` is a user id or any
        object with a ``user_id`` attribute.

        :return: ``True`` when admitted
        :raise BudgetExceededError: when a cap or the balance would be passed
        :raise BudgetUnavailableError: when the store did not answer in time
            (unless ``fail_open``)
        """
        await self.remaining(user_id, project_id, estimated_cost)
        return True

    async def remaining(
        self, user_id: Any, project_id: str | None = None, estimated_cost: Any = 0
    ) -> Decimal | None:
        """Like :meth:`check_availability`, returning what would be left: the
        smallest ``limit - spent - held`` over every capped window and balance
        before this request, or ``None`` when nothing is capped (or the store
        was unavailable and ``fail_open`` admitted)."""
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        requested = charge_micros(estimated_cost)
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        reply = await self._run(
            "lua_check",
            (self.keys.balance(user_id),),
            self._admission_args(now_ms, w, requested, user_id, project),
            fail_open=True,
        )
        if reply is None:
            return None
        if reply[0] != OK:
            raise self._refusal(reply, user_id, project, requested, w)
        return None if reply[1] < 0 else from_micros(reply[1])

    async def reserve(
        self,
        user_id: Any,
        amount: Any,
        project_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> Lease:
        """Admit ``amount`` and hold it against every scope until settled,
        released, or ``ttl_seconds`` pass (then it stops counting by itself).

        :param ttl_seconds: defaults to ``lease_ttl_seconds`` from the config
        :raise BudgetExceededError: when a cap or the balance would be passed
        :raise BudgetUnavailableError: when the store did not answer (a lease
            is never granted without the store, even with ``fail_open``)
        :raise IdempotencyConflictError: a key reused with other arguments
        """
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        requested = charge_micros(amount)
        ttl_ms = self._lease_ttl_ms(ttl_seconds)
        ikey = ""
        fingerprint = ""
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
            ikey = self.keys.caller_idempotency(key)
            fingerprint = _fingerprint("reserve", user_id, project, requested, ttl_ms)
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        lease_id = _new_id(now_ms)
        args = self._admission_args(now_ms, w, requested, user_id, project) + (
            fingerprint,
            lease_id,
            now_ms + ttl_ms,
        )
        reply = await self._run("lua_reserve", (ikey,), args)
        code = reply[0]
        if code == REFUSED:
            raise self._refusal(reply, user_id, project, requested, w)
        if code == CONFLICT:
            raise IdempotencyConflictError(idempotency_key or "")
        expires_ms = now_ms + ttl_ms
        if code == REPLAYED:  # the first call's lease, not this one's
            lease_id, first_expiry = _text(reply[1]).split("|")
            expires_ms = int(first_expiry)
        # Positional, in field order (id, user_id, project_id, amount_micros,
        # expires_ms, replayed): keywords cost the dataclass twice the time.
        return Lease(
            lease_id,
            user_id,
            project,
            requested,
            expires_ms,
            code == REPLAYED,
        )

    def _lease_ttl_ms(self, ttl_seconds: object) -> int:
        if ttl_seconds is None:
            return self.config.lease_ttl_seconds * 1000
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int | float):
            raise InvalidArgumentError(
                f"ttl_seconds must be a number, not {ttl_seconds!r}"
            )
        if not (0 < ttl_seconds <= 7 * 86400):
            raise InvalidArgumentError(
                f"ttl_seconds must be above 0 and at most 7 days, not {ttl_seconds!r}"
            )
        return max(1, int(ttl_seconds * 1000))

    def lease(
        self,
        user_id: Any,
        estimate: Any,
        project_id: str | None = None,
        ttl_seconds: int | None = None,
        idempotency_key: str | None = None,
    ) -> LeaseContext:
        """Reserve ``estimate`` for the body of an ``async with`` block.

        Set ``lease.actual_cost`` inside the block: on a normal exit the lease
        is settled at that cost (at the estimate when it was not set, so spend
        is never under-counted); on an exception it is released.
        """
        return LeaseContext(
            self, user_id, estimate, project_id, ttl_seconds, idempotency_key
        )

    # -- facts ---------------------------------------------------------------------

    async def record_spend(
        self,
        user_id: Any,
        cost: Any,
        project_id: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SpendRecord:
        """Record money already spent (the LLM call happened): a fact.

        Never refused for being over a limit; only invalid input is rejected.
        The argument order is coreason-budget's.

        :raise IdempotencyConflictError: a key reused with other arguments
        """
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        amount = charge_micros(cost)
        # (None is checked here: most facts carry neither, and a call is not free)
        model_name = None if model is None else check_model(model)
        meta = "" if metadata is None else encode_metadata(metadata, self._max_meta)
        now_ms = self._now_ms()
        entry_id = _new_id(now_ms)
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
            ikey = self.keys.caller_idempotency(key)
            fingerprint = _fingerprint(
                "spend", user_id, project, amount, model_name, meta
            )
        else:
            # A generated key is this call's own: only a replay of this very
            # call (the spool's) can meet it, so there is nothing to compare.
            key = fingerprint = ""
            ikey = self.keys.generated_idempotency(entry_id)
        args = self._fact_head(now_ms, amount) + (
            fingerprint,
            entry_id,
            user_id,
            project or "",
            model_name or "",
            meta,
            key,
        )
        reply = await self._run(
            "lua_record",
            (ikey,),
            args,
            spool_info=lambda: {
                "kind": "spend",
                "entry": entry_id,
                "user": user_id,
                "amount": amount,
            },
        )
        if reply is None:  # spooled: replayed exactly once when Redis answers
            return SpendRecord(
                entry_id=entry_id,
                kind="spend",
                user_id=user_id,
                project_id=project,
                amount_micros=amount,
                model=model_name,
                occurred_ms=now_ms,
                spooled=True,
            )
        code = reply[0]
        if code == CONFLICT:
            raise IdempotencyConflictError(key)
        occurred_ms = now_ms
        if code == REPLAYED:  # the first call's entry, not this one's
            entry_id, first_ms = _text(reply[1]).split("|")
            occurred_ms = int(first_ms)
        # Positional, in field order (entry_id, kind, user_id, project_id,
        # amount_micros, model, occurred_ms, replayed): as Lease in reserve.
        return SpendRecord(
            entry_id,
            "spend",
            user_id,
            project,
            amount,
            model_name,
            occurred_ms,
            code == REPLAYED,
        )

    async def settle(
        self,
        lease: Lease | str,
        actual_cost: Any,
        model: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SpendRecord:
        """Post a lease at its actual cost: the hold stops counting and the
        cost is charged (a fact, even above the estimate, even after expiry —
        then marked ``late``). Settling again at the same cost returns the
        first record.

        :param lease: the :class:`Lease` or its id
        :raise LeaseStateError: the lease was released, or is unknown
        :raise IdempotencyConflictError: it was already settled at another cost
        """
        lease_id = lease.id if isinstance(lease, Lease) else lease
        lease_id = check_id("lease_id", lease_id, self._max_id)
        amount = charge_micros(actual_cost)
        # (None is checked here: most facts carry neither, and a call is not free)
        model_name = None if model is None else check_model(model)
        meta = "" if metadata is None else encode_metadata(metadata, self._max_meta)
        now_ms = self._now_ms()
        entry_id = _new_id(now_ms)
        args = self._fact_head(now_ms, amount) + (
            entry_id,
            model_name or "",
            meta,
            lease_id,
        )
        reply = await self._run(
            "lua_settle",
            (self.keys.hold(lease_id),),
            args,
            spool_info=lambda: {"kind": "settle", "entry": entry_id, "lease": lease_id},
        )
        if reply is None:  # spooled: a repeated settle at one cost is a replay
            known = lease if isinstance(lease, Lease) else None
            return SpendRecord(
                entry_id=entry_id,
                kind="settle",
                user_id=known.user_id if known is not None else "",
                project_id=known.project_id if known is not None else None,
                amount_micros=amount,
                model=model_name,
                occurred_ms=now_ms,
                spooled=True,
                lease_id=lease_id,
                estimate_micros=known.amount_micros if known is not None else None,
            )
        code = reply[0]
        if code == UNKNOWN_LEASE:
            raise LeaseStateError(
                lease_id, "unknown (never granted, or forgotten)", "settle"
            )
        if code == LEASE_RELEASED:
            raise LeaseStateError(lease_id, "released", "settle")
        if code == CONFLICT:
            raise IdempotencyConflictError(
                f"settle:{lease_id}",
                f"already settled at {from_micros(int(reply[1]))}",
            )
        settled_ms = now_ms
        if code == OK:  # this call's entry, time: only the verdict comes back
            late, estimate = reply[3] == 1, reply[4]
        else:  # REPLAYED: the first settle's
            entry_id, first_ms, late_text, estimate_text = _text(reply[3]).split("|")
            settled_ms, late, estimate = (
                int(first_ms),
                late_text == "1",
                int(estimate_text),
            )
        project = _text(reply[2])
        # Positional, in field order (entry_id, kind, user_id, project_id,
        # amount_micros, model, occurred_ms, replayed, late, spooled,
        # lease_id, estimate_micros): as Lease in reserve.
        return SpendRecord(
            entry_id,
            "settle",
            _text(reply[1]),
            project or None,
            amount,
            model_name,
            settled_ms,
            code == REPLAYED,
            late,
            False,
            lease_id,
            estimate,
        )

    async def release(self, lease: Lease | str) -> bool:
        """Void a lease: its hold stops counting at once, nothing is charged.

        :return: ``True`` when a counting hold was released; ``False`` when it
            had already been released or had expired
        :raise LeaseStateError: the lease was settled, or is unknown
        """
        lease_id = lease.id if isinstance(lease, Lease) else lease
        lease_id = check_id("lease_id", lease_id, self._max_id)
        reply = await self._run("lua_release", (self.keys.hold(lease_id),), (lease_id,))
        if reply[0] == UNKNOWN_LEASE:
            raise LeaseStateError(
                lease_id, "unknown (never granted, or forgotten)", "release"
            )
        if reply[0] == LEASE_SETTLED:
            raise LeaseStateError(lease_id, "settled", "release")
        return bool(reply[1])

    async def add_credits(
        self,
        user_id: Any,
        amount: Any,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SpendRecord:
        """Add prepaid credits to a user's balance (rounded down): a fact.

        :return: the record, with the new ``balance``
        :raise IdempotencyConflictError: a key reused with other arguments
        """
        user_id = user_id_of(user_id, self._max_id)
        micros = credit_micros(amount)
        meta = encode_metadata(metadata, self.config.max_metadata_bytes)
        now_ms = self._now_ms()
        entry_id = _new_id(now_ms)
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
            ikey = self.keys.caller_idempotency(key)
        else:
            key = ""
            ikey = self.keys.generated_idempotency(entry_id)
        args = (
            now_ms,
            micros,
            _fingerprint("credit", user_id, micros, meta),
            entry_id,
            user_id,
            meta,
            key,
        )
        reply = await self._run(
            "lua_credit",
            (ikey,),
            args,
            spool_info=lambda: {
                "kind": "credit",
                "entry": entry_id,
                "user": user_id,
                "amount": micros,
            },
        )
        if reply is None:  # spooled: the new balance is not known yet
            return SpendRecord(
                entry_id=entry_id,
                kind="credit",
                user_id=user_id,
                project_id=None,
                amount_micros=micros,
                model=None,
                occurred_ms=now_ms,
                spooled=True,
            )
        if reply[0] == CONFLICT:
            raise IdempotencyConflictError(key)
        entry_id, occurred_ms, balance = _text(reply[1]).split("|")
        return SpendRecord(
            entry_id=entry_id,
            kind="credit",
            user_id=user_id,
            project_id=None,
            amount_micros=micros,
            model=None,
            occurred_ms=int(occurred_ms),
            replayed=reply[0] == REPLAYED,
            balance=from_micros(int(balance)),
        )

    # -- operators --------------------------------------------------------------

    def _scope_id(self, scope: object, scope_id: object) -> tuple[Scope, str]:
        if scope == "global":
            return "global", ""
        if scope not in ("user", "project"):
            raise InvalidArgumentError(
                f"scope must be 'user', 'project' or 'global', not {scope!r}"
            )
        name = "user_id" if scope == "user" else "project_id"
        return scope, check_id(name, scope_id, self._max_id)

    async def set_limits(
        self,
        scope: Scope,
        scope_id: str | None = None,
        *,
        daily: Any = UNSET,
        monthly: Any = UNSET,
    ) -> Limits:
        """Override the caps of one entity, effective on the next call.

        :param scope: ``"user"``, ``"project"`` or ``"global"``
        :param scope_id: the user or project id (ignored for ``"global"``)
        :param daily: the new daily cap; ``None`` = no cap; omitted = unchanged
        :param monthly: the same, for the month
        """
        kind, sid = self._scope_id(scope, scope_id)
        encoded = []
        for value in (daily, monthly):
            if value is UNSET:
                encoded.append("")
            elif value is None:
                encoded.append("-1")
            else:
                encoded.append(str(limit_micros(value)))
        reply = await self._run(
            "lua_set_limits", (self.keys.limits(kind, sid),), tuple(encoded)
        )
        return self._limits(kind, sid, reply)

    async def clear_limits(self, scope: Scope, scope_id: str | None = None) -> Limits:
        """Drop an entity's overrides: it follows the configured defaults again."""
        kind, sid = self._scope_id(scope, scope_id)
        reply = await self._run(
            "lua_set_limits", (self.keys.limits(kind, sid),), ("-", "-")
        )
        return self._limits(kind, sid, reply)

    def _limits(self, scope: Scope, scope_id: str, reply: list[Any]) -> Limits:
        defaults = {
            "user": self._defaults[0:2],
            "project": self._defaults[2:4],
            "global": self._defaults[4:6],
        }[scope]
        effective = []
        overridden = set()
        for name, value, default in zip(
            ("daily", "monthly"), reply, defaults, strict=True
        ):
            if value is not None:
                overridden.add(name)
            micros = int(value if value is not None else default)
            effective.append(None if micros < 0 else from_micros(micros))
        return Limits(
            scope=scope,
            scope_id=scope_id or None,
            daily=effective[0],
            monthly=effective[1],
            overridden=frozenset(overridden),
        )

    async def get_usage(
        self, user_id: Any, project_id: str | None = None
    ) -> dict[str, ScopeUsage]:
        """Spent, held, caps, what remains and the balance, per scope.

        :return: ``{"user": ..., "global": ...}``, plus ``"project"`` when a
            project id is given
        """
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        reply = await self._run(
            "lua_usage",
            (self.keys.balance(user_id),),
            (now_ms, w.day, w.month, user_id, project or ""),
        )
        scopes: list[tuple[str, str | None]] = [("user", user_id)]
        if project is not None:
            scopes.append(("project", project))
        scopes.append(("global", None))
        day_end, month_end = from_ms(w.day_end_ms), from_ms(w.month_end_ms)
        usage = {}
        for i, (scope, scope_id) in enumerate(scopes):
            held_m, balance_m, dl, ml, ds, ms = reply[i * 6 : i * 6 + 6]
            held = from_micros(int(held_m))
            balance = None
            if scope == "user" and self.config.enforce_balance:
                balance = from_micros(int(balance_m or 0))
            usage[scope] = ScopeUsage(
                scope=scope,
                scope_id=scope_id,
                daily=_window_usage(int(ds), int(held_m), int(dl), day_end),
                monthly=_window_usage(int(ms), int(held_m), int(ml), month_end),
                held=held,
                balance=balance,
            )
        return usage


def _window_usage(
    spent: int, held: int, limit: int, resets_at: datetime
) -> WindowUsage:
    capped = limit >= 0
    return WindowUsage(
        spent=from_micros(spent),
        held=from_micros(held),
        limit=from_micros(limit) if capped else None,
        remaining=from_micros(max(0, limit - spent - held)) if capped else None,
        resets_at=resets_at,
    )


def _signed_micros(value: Decimal) -> int:
    micros = limit_micros(abs(value))
    if micros > MAX_MICROS:
        raise InvalidArgumentError(f"{value} is above the maximum amount")
    return -micros if value < 0 else micros


class LeaseContext:
    """``async with budget.lease(...) as lease``: settle on exit, release on error."""

    def __init__(
        self,
        budget: BudgetManager,
        user_id: Any,
        estimate: Any,
        project_id: str | None,
        ttl_seconds: int | None,
        idempotency_key: str | None,
    ) -> None:
        self._budget = budget
        self._args = (user_id, estimate, project_id, ttl_seconds, idempotency_key)
        self.lease: Lease | None = None
        #: the settle record, once the block has ended normally
        self.record: SpendRecord | None = None

    async def __aenter__(self) -> Lease:
        self.lease = await self._budget.reserve(*self._args)
        return self.lease

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        lease = self.lease
        assert lease is not None
        if exc_type is None:
            cost = lease.actual_cost
            if cost is None:
                logger.warning(
                    "spendgate: lease {} ended without actual_cost; "
                    "settling at the estimate",
                    lease.id,
                )
                cost = lease.amount
            self.record = await self._budget.settle(
                lease, cost, lease.model, lease.metadata
            )
            return
        try:
            await self._budget.release(lease)
        except Exception as release_error:  # the hold expires by itself anyway
            logger.warning(
                "spendgate: could not release lease {} after an error: {}",
                lease.id,
                release_error,
            )
