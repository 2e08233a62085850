"""Model-based: random operation sequences agree with a pure-Python model.

A hypothesis state machine drives random check / record / reserve / settle /
release / credit / set-limits / clock-advance steps (across days and months)
against a BudgetManager on real Redis and on fakeredis, and applies each to the
model in tests/budget_model.py: every admission decision (which scope and window
refused, what would remain), every fact's result and, after every step, spent,
held, limits and balances of every scope agree. Plus a zero-amounts regression."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)

from budget_model import (
    KEYS,
    NO_CAP,
    PROJECTS,
    USERS,
    Hold,
    Model,
    amounts,
    caps,
    dec,
    down,
    ms,
    overrides,
    up,
)
from conftest import REDIS_URL, FakeClock, real_redis_available, service_missing
from machine_base import AsyncBudgetMachine
from spendgate import (
    UNSET,
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    IdempotencyConflictError,
    LeaseStateError,
)


class BudgetMachine(AsyncBudgetMachine):
    leases = Bundle("leases")

    def __init__(self) -> None:
        super().__init__(datetime(2026, 1, 30, 22, 0, tzinfo=UTC), "mb")
        self.model: Model | None = None

    @property
    def m(self) -> Model:
        assert self.model is not None
        return self.model

    @initialize(
        user_caps=st.tuples(caps, caps),
        project_caps=st.tuples(caps, caps),
        global_caps=st.tuples(st.one_of(st.none(), st.just(Decimal(20))), caps),
        enforce=st.booleans(),
        min_balance=st.sampled_from(["0", "-2", "1.5"]),
    )
    def setup(
        self,
        user_caps: tuple[Decimal | None, Decimal | None],
        project_caps: tuple[Decimal | None, Decimal | None],
        global_caps: tuple[Decimal | None, Decimal | None],
        enforce: bool,
        min_balance: str,
    ) -> None:
        config = BudgetConfig(
            key_prefix=self.prefix,
            daily_user_limit=user_caps[0],
            monthly_user_limit=user_caps[1],
            daily_project_limit=project_caps[0],
            monthly_project_limit=project_caps[1],
            daily_global_limit=global_caps[0],
            monthly_global_limit=global_caps[1],
            enforce_balance=enforce,
            min_balance=min_balance,
        )
        self.budget = BudgetManager(config, clock=self.clock, redis=self.client)

        def cap(value: Decimal | None) -> int:
            return NO_CAP if value is None else down(value)

        defaults = {
            "user": [cap(user_caps[0]), cap(user_caps[1])],
            "project": [cap(project_caps[0]), cap(project_caps[1])],
            "global": [cap(global_caps[0]), cap(global_caps[1])],
        }
        sign = -1 if min_balance.startswith("-") else 1
        self.model = Model(
            defaults, enforce, sign * down(Decimal(min_balance.lstrip("-")))
        )

    # -- rules ------------------------------------------------------------------

    @rule(
        user=st.sampled_from(USERS), project=st.sampled_from(PROJECTS), amount=amounts
    )
    def check(self, user: str, project: str | None, amount: Decimal) -> None:
        verdict, where, room = self.m.admit(user, project, up(amount), self.clock())
        if verdict == "refused":
            with pytest.raises(BudgetExceededError) as refused:
                self.run(self.b.remaining(user, project, amount))
            assert f"{refused.value.scope}:{refused.value.window}" == where
            return
        remaining = self.run(self.b.remaining(user, project, amount))
        assert remaining == (None if room < 0 else dec(room))

    @rule(
        user=st.sampled_from(USERS),
        project=st.sampled_from(PROJECTS),
        amount=amounts,
        key=st.sampled_from(KEYS),
        model_name=st.sampled_from([None, "m"]),
    )
    def record(
        self,
        user: str,
        project: str | None,
        amount: Decimal,
        key: str | None,
        model_name: str | None,
    ) -> None:
        micros = up(amount)
        fingerprint = ("spend", user, project, micros, model_name)
        if key is not None and key in self.m.idem:
            seen, entry = self.m.idem[key]
            if seen != fingerprint:
                with pytest.raises(IdempotencyConflictError):
                    self.run(
                        self.b.record_spend(user, amount, project, model_name, key)
                    )
                return
            rec = self.run(self.b.record_spend(user, amount, project, model_name, key))
            assert rec.replayed and rec.entry_id == entry
            return
        rec = self.run(self.b.record_spend(user, amount, project, model_name, key))
        assert not rec.replayed and not rec.spooled and rec.amount == dec(micros)
        self.m.charge(user, project, micros, self.clock())
        if key is not None:
            self.m.idem[key] = (fingerprint, rec.entry_id)

    @rule(
        target=leases,
        user=st.sampled_from(USERS),
        project=st.sampled_from(PROJECTS),
        amount=amounts,
        ttl=st.sampled_from([1, 90, 3600, 2 * 86400]),
        key=st.sampled_from(KEYS),
    )
    def reserve(
        self, user: str, project: str | None, amount: Decimal, ttl: int, key: str | None
    ) -> Any:
        micros = up(amount)
        fingerprint = ("reserve", user, project, micros, ttl * 1000)
        if key is not None and key in self.m.idem:
            seen, lease_id = self.m.idem[key]
            if seen != fingerprint:
                with pytest.raises(IdempotencyConflictError):
                    self.run(self.b.reserve(user, amount, project, ttl, key))
                return multiple()
            lease = self.run(self.b.reserve(user, amount, project, ttl, key))
            assert lease.replayed and lease.id == lease_id
            return multiple()
        now = self.clock()
        verdict, where, _ = self.m.admit(user, project, micros, now)
        if verdict == "refused":
            with pytest.raises(BudgetExceededError) as refused:
                self.run(self.b.reserve(user, amount, project, ttl, key))
            assert f"{refused.value.scope}:{refused.value.window}" == where
            return multiple()
        lease = self.run(self.b.reserve(user, amount, project, ttl, key))
        assert not lease.replayed and lease.amount == dec(micros)
        expires = ms(now) + ttl * 1000
        assert ms(lease.expires_at) == expires
        self.m.holds[lease.id] = Hold(user, project, micros, expires)
        if key is not None:
            self.m.idem[key] = (fingerprint, lease.id)
        return lease.id

    @rule(lease_id=st.one_of(leases, st.just("no-such-lease")), amount=amounts)
    def settle(self, lease_id: str, amount: Decimal) -> None:
        micros = up(amount)
        hold = self.m.holds.get(lease_id)
        if hold is None or hold.state == "v":
            with pytest.raises(LeaseStateError):
                self.run(self.b.settle(lease_id, amount))
            return
        if hold.state == "s":
            if hold.cost != micros:
                with pytest.raises(IdempotencyConflictError):
                    self.run(self.b.settle(lease_id, amount))
                return
            rec = self.run(self.b.settle(lease_id, amount))
            assert rec.replayed and rec.entry_id == hold.entry and rec.late == hold.late
            return
        now = self.clock()
        rec = self.run(self.b.settle(lease_id, amount))
        assert not rec.replayed and rec.user_id == hold.user
        assert rec.project_id == hold.project and rec.estimate == dec(hold.amount)
        assert rec.late == (ms(now) >= hold.expires_ms)
        self.m.charge(hold.user, hold.project, micros, now)
        hold.state, hold.cost, hold.entry, hold.late = (
            "s",
            micros,
            rec.entry_id,
            rec.late,
        )

    @rule(lease_id=st.one_of(leases, st.just("no-such-lease")))
    def release(self, lease_id: str) -> None:
        hold = self.m.holds.get(lease_id)
        if hold is None or hold.state == "s":
            with pytest.raises(LeaseStateError):
                self.run(self.b.release(lease_id))
            return
        counting = hold.state == "p" and ms(self.clock()) < hold.expires_ms
        assert self.run(self.b.release(lease_id)) is counting
        hold.state = "v"

    @rule(user=st.sampled_from(USERS), amount=amounts, key=st.sampled_from(KEYS))
    def credit(self, user: str, amount: Decimal, key: str | None) -> None:
        micros = down(amount)
        fingerprint = ("credit", user, micros)
        if key is not None and key in self.m.idem:
            seen, first = self.m.idem[key]
            if seen != fingerprint:
                with pytest.raises(IdempotencyConflictError):
                    self.run(self.b.add_credits(user, amount, key))
                return
            rec = self.run(self.b.add_credits(user, amount, key))
            assert rec.replayed and (rec.entry_id, rec.balance) == first
            return
        rec = self.run(self.b.add_credits(user, amount, key))
        self.m.balances[user] = self.m.balances.get(user, 0) + micros
        assert not rec.replayed and rec.balance == dec(self.m.balances[user])
        if key is not None:
            self.m.idem[key] = (fingerprint, (rec.entry_id, rec.balance))

    @rule(
        who=st.sampled_from(
            [("user", "u1"), ("user", "u2"), ("project", "p1"), ("global", "")]
        ),
        daily=overrides,
        monthly=overrides,
    )
    def set_limits(self, who: tuple[str, str], daily: Any, monthly: Any) -> None:
        scope, sid = who
        result = self.run(
            self.b.set_limits(scope, sid or None, daily=daily, monthly=monthly)  # type: ignore[arg-type]
        )
        over = self.m.overrides.setdefault((scope, sid), {})
        for field, value in (("dl", daily), ("ml", monthly)):
            if value is not UNSET:
                over[field] = NO_CAP if value is None else down(value)
        for window, got in (("daily", result.daily), ("monthly", result.monthly)):
            cap = self.m.limit(scope, sid, window)
            assert got == (None if cap < 0 else dec(cap))

    @rule(seconds=st.sampled_from([1, 59, 3600, 6 * 3600, 86400, 9 * 86400]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # -- after every step ---------------------------------------------------------

    @invariant()
    def usage_agrees(self) -> None:
        if self.budget is None:
            return
        now = self.clock()
        now_ms = ms(now)
        for user in USERS:
            for project in PROJECTS:
                usage = self.run(self.b.get_usage(user, project))
                for scope, sid in self.m.scopes(user, project):
                    got = usage[scope]
                    held = self.m.held(scope, sid, now_ms)
                    assert got.held == dec(held), (scope, sid)
                    for window in ("daily", "monthly"):
                        w = getattr(got, window)
                        assert w.spent == dec(self.m.spent_in(scope, sid, window, now))
                        assert w.held == dec(held)
                        cap = self.m.limit(scope, sid, window)
                        assert w.limit == (None if cap < 0 else dec(cap))
                # (shown whether enforced or not: 0 for a user who has none)
                expected = dec(self.m.balances.get(user, 0))
                assert usage["user"].balance == expected


class RedisBudgetMachine(BudgetMachine):
    backend = "redis"


_SETTINGS = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    # No shrinking: each step makes seven store calls, so shrinking a failure
    # takes minutes; the unshrunk sequence is printed, and is short anyway.
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_model_agrees_on_fakeredis() -> None:
    run_state_machine_as_test(BudgetMachine, settings=_SETTINGS)


@pytest.mark.redis
def test_model_agrees_on_real_redis() -> None:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    run_state_machine_as_test(RedisBudgetMachine, settings=_SETTINGS)


@pytest.mark.redis
async def test_zero_amounts_on_real_redis(tmp_path: Any) -> None:
    """Regression: zero charges and holds once reached HINCRBY as Lua's -0,
    which real Redis (not fakeredis) rejects; an expired zero hold then broke
    every admission of the deployment. Found by the state machine above."""
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    client = aioredis.Redis.from_url(REDIS_URL, socket_timeout=5)
    prefix = f"mz{uuid.uuid4().hex[:12]}"
    clock = FakeClock()
    config = BudgetConfig(key_prefix=prefix, enforce_balance=True, min_balance="-10")
    try:
        async with BudgetManager(config, clock=clock, redis=client) as budget:
            assert not (await budget.record_spend("z", 0)).spooled  # cached: free
            lease = await budget.reserve("z", 0, ttl_seconds=1)
            assert (await budget.settle(lease, 0)).amount == 0
            await budget.reserve("z", 0, ttl_seconds=1)
            clock.advance(5)
            assert await budget.check_availability("z")  # purges the zero hold
    finally:
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*", count=5000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()
