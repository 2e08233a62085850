"""Hardening: fuzzed public API and id length limits.

How:

- hypothesis throws arbitrary values (wrong types, NaN, infinities, huge and
  negative numbers, odd strings, over-long ids, bad metadata and TTLs) at
  every public method of a BudgetManager (on fakeredis, and a shorter run on
  the real Redis); the only exceptions allowed to escape are spendgate's
  documented typed errors (``SpendgateError`` and its subclasses), and
  ``load_config`` only ever raises ``ConfigurationError``.
- Ids: an email of the longest legal length and long URNs are accepted by
  default; one character over ``max_id_length`` is refused with a clear
  ``InvalidIdError`` (a ``ValueError``) naming the limit, and non-strings with
  ``InvalidIdTypeError`` (a ``TypeError``).

Secrets kept out of logs, errors and the spool: tests/test_fuzz_secrets.py.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import REDIS_URL, real_redis_available, service_missing
from spendgate import (
    UNSET,
    BudgetConfig,
    BudgetManager,
    ConfigurationError,
    InvalidIdError,
    InvalidIdTypeError,
    Lease,
    SpendgateError,
)
from spendgate.config import load_config

# -- fuzzing ---------------------------------------------------------------------


class _User:
    def __init__(self, user_id: object) -> None:
        self.user_id = user_id


ids = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", " ", "\n", "x:project:y", "{sg}", "*", "a\x00b", "ü" * 3]),
    st.text(min_size=510, max_size=515),
    st.none(),
    st.integers(),
    st.binary(max_size=4),
    st.builds(_User, st.one_of(st.text(max_size=8), st.none(), st.integers())),
    st.lists(st.integers(), max_size=2),
)
amounts = st.one_of(
    st.decimals(allow_nan=True, allow_infinity=True),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.text(max_size=70),
    st.sampled_from(["1e9", "1000000000.0000001", "-0", "0.0000001", "1_000", " 2 "]),
    st.booleans(),
    st.none(),
    st.complex_numbers(allow_nan=False, allow_infinity=False, max_magnitude=10),
    st.lists(st.integers(), max_size=2),
)
metadata = st.one_of(
    st.none(),
    st.dictionaries(
        st.text(max_size=5),
        st.one_of(
            st.integers(),
            st.floats(),
            st.text(max_size=10),
            st.decimals(),
            st.none(),
            st.booleans(),
            st.sets(st.integers(), max_size=2),
        ),
        max_size=3,
    ),
    st.dictionaries(st.integers(), st.integers(), max_size=2),
    st.just({"big": "x" * 9000}),
    st.integers(),
    st.text(max_size=5),
)
models = st.one_of(st.none(), st.text(max_size=10), st.text(min_size=250, max_size=260))
ttls = st.one_of(
    st.none(),
    st.integers(min_value=-5, max_value=10**7),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.booleans(),
)
caps = st.one_of(st.just(UNSET), st.none(), amounts)
scopes = st.one_of(
    st.sampled_from(["user", "project", "global", "x"]), st.none(), st.integers()
)


async def _one_call(
    budget: BudgetManager, data: st.DataObject, leases: list[Lease]
) -> None:
    op = data.draw(
        st.sampled_from(
            [
                "check",
                "remaining",
                "record",
                "reserve",
                "settle",
                "release",
                "credit",
                "set_limits",
                "clear_limits",
                "usage",
                "lease",
            ]
        )
    )
    draw = data.draw
    lease_ref = st.one_of(ids, st.sampled_from(leases)) if leases else ids
    if op == "check":
        await budget.check_availability(
            draw(ids), draw(st.one_of(st.none(), ids)), draw(amounts)
        )
    elif op == "remaining":
        await budget.remaining(
            draw(ids), draw(st.one_of(st.none(), ids)), draw(amounts)
        )
    elif op == "record":
        await budget.record_spend(
            draw(ids),
            draw(amounts),
            project_id=draw(st.one_of(st.none(), ids)),
            model=draw(models),
            idempotency_key=draw(st.one_of(st.none(), ids)),
            metadata=draw(metadata),
        )
    elif op == "reserve":
        leases.append(
            await budget.reserve(
                draw(ids),
                draw(amounts),
                project_id=draw(st.one_of(st.none(), ids)),
                ttl_seconds=draw(ttls),
                idempotency_key=draw(st.one_of(st.none(), ids)),
            )
        )
    elif op == "settle":
        await budget.settle(
            draw(lease_ref), draw(amounts), draw(models), draw(metadata)
        )
    elif op == "release":
        await budget.release(draw(lease_ref))
    elif op == "credit":
        await budget.add_credits(
            draw(ids),
            draw(amounts),
            idempotency_key=draw(st.one_of(st.none(), ids)),
            metadata=draw(metadata),
        )
    elif op == "set_limits":
        await budget.set_limits(
            draw(scopes), draw(ids), daily=draw(caps), monthly=draw(caps)
        )
    elif op == "clear_limits":
        await budget.clear_limits(draw(scopes), draw(ids))
    elif op == "usage":
        await budget.get_usage(draw(ids), draw(st.one_of(st.none(), ids)))
    else:
        async with budget.lease(
            draw(ids), draw(amounts), draw(st.one_of(st.none(), ids))
        ) as lease:
            lease.actual_cost = draw(amounts)


class _Harness:
    def __init__(self, client: aioredis.Redis, tmp_path: Path, prefix: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.client = client
        self.prefix = prefix
        self.budget = BudgetManager(
            BudgetConfig(
                key_prefix=prefix,
                daily_user_limit=5,
                enforce_balance=True,
                spool_path=tmp_path,
            ),
            redis=client,
        )
        self.leases: list[Lease] = []
        self.escaped: list[BaseException] = []

    def call(self, data: st.DataObject) -> None:
        try:
            self.loop.run_until_complete(_one_call(self.budget, data, self.leases))
        except SpendgateError:
            pass  # a documented, typed error

    def close(self, cleanup: bool) -> None:
        async def close() -> None:
            await self.budget.aclose()
            if cleanup:
                pattern = f"{self.prefix}:*"
                keys = [
                    k async for k in self.client.scan_iter(match=pattern, count=5000)
                ]
                if keys:
                    await self.client.delete(*keys)
            await self.client.aclose()

        try:
            self.loop.run_until_complete(close())
        finally:
            self.loop.close()


@pytest.fixture
def fake_harness(tmp_path: Path) -> Iterator[_Harness]:
    client = fakeredis.FakeAsyncRedis(server=fakeredis.FakeServer())
    harness = _Harness(client, tmp_path, "fuzz")
    yield harness
    harness.close(cleanup=False)


@pytest.fixture
def redis_harness(tmp_path: Path) -> Iterator[_Harness]:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    harness = _Harness(client, tmp_path, f"fuzz{uuid.uuid4().hex[:12]}")
    yield harness
    harness.close(cleanup=True)


_FUZZ = settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@_FUZZ
@given(data=st.data())
def test_only_typed_errors_escape_on_fakeredis(
    fake_harness: _Harness, data: st.DataObject
) -> None:
    fake_harness.call(data)


@pytest.mark.redis
@settings(_FUZZ, max_examples=150)
@given(data=st.data())
def test_only_typed_errors_escape_on_real_redis(
    redis_harness: _Harness, data: st.DataObject
) -> None:
    redis_harness.call(data)


@settings(max_examples=200, deadline=None)
@given(
    settings_=st.dictionaries(
        st.sampled_from(
            [
                "daily_user_limit",
                "min_balance",
                "key_prefix",
                "max_id_length",
                "redis_timeout_seconds",
                "spool_max_entries",
                "breaker_failure_threshold",
                "breaker_reset_seconds",
                "daily_limit_usd",
                "model_price_overrides",
                "no_such_setting",
            ]
        ),
        st.one_of(
            amounts, ids, st.dictionaries(st.text(max_size=3), amounts, max_size=2)
        ),
        max_size=3,
    )
)
def test_load_config_raises_only_configuration_errors(
    settings_: dict[str, Any],
) -> None:
    try:
        load_config(**settings_)
    except ConfigurationError:
        pass


# -- id length limits --------------------------------------------------------------


async def test_ids_take_emails_and_urns_and_refuse_one_char_over(
    make_budget: Any,
) -> None:
    budget: BudgetManager = make_budget()
    # 254 characters: RFC 5321's longest address (64-character local part).
    email = "a" * 64 + "@" + "b" * 63 + "." + "b" * 63 + "." + "b" * 59 + ".c"
    assert len(email) == 254
    urn = "urn:example:" + ":".join(["seg-ü" * 10] * 9)
    assert len(urn) < 512
    longest = "u" * 512
    for user in (email, urn, longest, "用户" * 256):
        record = await budget.record_spend(user, "1", project_id=urn)
        assert record.user_id == user
        assert (await budget.get_usage(user))["user"].daily.spent == 1
    for name, call in (
        ("user_id", lambda v: budget.check_availability(v)),
        ("project_id", lambda v: budget.record_spend("u", 1, project_id=v)),
        ("idempotency_key", lambda v: budget.record_spend("u", 1, idempotency_key=v)),
        ("lease_id", lambda v: budget.release(v)),
    ):
        with pytest.raises(InvalidIdError, match="above the limit of 512") as refused:
            await call("x" * 513)
        assert isinstance(refused.value, ValueError) and name in str(refused.value)
        with pytest.raises(InvalidIdTypeError) as wrong:
            await call(12345)
        assert isinstance(wrong.value, TypeError)


async def test_the_id_limit_is_configurable(make_budget: Any) -> None:
    budget: BudgetManager = make_budget(max_id_length=16)
    await budget.record_spend("x" * 16, "1")
    with pytest.raises(InvalidIdError, match="above the limit of 16"):
        await budget.record_spend("x" * 17, "1")
