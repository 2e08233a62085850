"""The money-invariants state machine's base (tests/test_money_invariants.py):
the BudgetManager on its backend and clock, the model, the idempotency checks
every keyed call shares (a replay must answer the first result and change no
key; the same key with other arguments must raise IdempotencyConflictError
and change no key), refusals (the typed error, no key changed), replays,
clock advances and the sweep, and the invariant checked after every step:
get_balance, get_usage and get_team equal the model (tests/money_model.py).
The rules are tests/money_rules.py's and tests/money_team_rules.py's.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    initialize,
    invariant,
    precondition,
    rule,
)

from conftest import (
    deployment_state,
)
from machine_base import AsyncBudgetMachine
from money_model import (
    MoneyModel,
    day,
    dec,
    down,
    month,
    ms,
    up,
)
from spendgate import (
    BudgetConfig,
    BudgetManager,
    IdempotencyConflictError,
)

USERS = ["u1", "u2"]
PROJECTS: list[str | None] = [None, "p1"]
KEYS: list[str | None] = [None, None, "k1", "k2", "k3", "k4"]
TEAM = "t1"
CHARGES = Bundle("charges")
LEASES = Bundle("leases")

amounts = st.one_of(
    st.decimals(min_value=0, max_value=4, places=7),
    st.sampled_from([Decimal(0), Decimal("0.000001"), Decimal(1), Decimal("2.5")]),
)
positive = amounts.filter(lambda a: up(a) > 0)
caps = st.one_of(st.none(), st.sampled_from([Decimal(2), Decimal("5.5")]))


def same_amount(amount: Decimal) -> list[Any]:
    """The amount in forms equal to it: the call's arguments are the same."""
    forms: list[Any] = [amount, str(amount), amount + Decimal("0.0000000")]
    if amount == amount.to_integral_value():
        forms.append(int(amount))
    return forms


class MoneyMachineBase(AsyncBudgetMachine):
    def __init__(self) -> None:
        super().__init__(datetime(2026, 3, 30, 20, 0, tzinfo=UTC), "mi")
        self.model = MoneyModel(False, 0, (None, None))
        #: idempotency key -> (the call's fingerprint, a check of a replay's answer)
        self.idem: dict[str, tuple[tuple[Any, ...], Callable[[Any], None]]] = {}
        #: keyed calls made, to replay: (method, its arguments)
        self.keyed: list[tuple[str, dict[str, Any]]] = []

    def now(self) -> datetime:
        # (every call at a millisecond of its own: grants made in the same
        # millisecond may be drawn on in either order)
        self.clock.advance(0.001)
        return self.clock()

    @initialize(
        enforce=st.booleans(),
        floor=st.sampled_from(["0", "-1.5"]),
        user_caps=st.tuples(caps, caps),
    )
    def setup(
        self,
        enforce: bool,
        floor: str,
        user_caps: tuple[Decimal | None, Decimal | None],
    ) -> None:
        config = BudgetConfig(
            key_prefix=self.prefix,
            daily_user_limit=user_caps[0],
            monthly_user_limit=user_caps[1],
            daily_project_limit=None,
            daily_global_limit=None,
            enforce_balance=enforce,
            min_balance=floor,
            refund_window_seconds=90 * 86400,
        )
        self.budget = BudgetManager(config, clock=self.clock, redis=self.client)
        self.model = MoneyModel(
            enforce,
            -down(-Decimal(floor)) if floor.startswith("-") else down(Decimal(floor)),
            tuple(None if c is None else down(c) for c in user_caps),  # type: ignore[arg-type]
        )

    # -- idempotency --------------------------------------------------------

    def seen(
        self, key: str | None, fp: tuple[Any, ...], call: Callable[[], Any]
    ) -> bool:
        """For a key used before: the call must replay (same fingerprint) or
        conflict, and change nothing. False for a new key (the caller goes on)."""
        if key is None or key not in self.idem:
            return False
        first, check = self.idem[key]
        before = self.run(deployment_state(self.b))
        if first != fp:
            with pytest.raises(IdempotencyConflictError):
                self.run(call())
        else:
            check(self.run(call()))
        assert self.run(deployment_state(self.b)) == before, "a replay changed state"
        return True

    def remember(
        self, name: str, args: dict[str, Any], fp: tuple[Any, ...], check: Any
    ) -> None:
        key = args["key"]
        if key is not None:
            self.idem[key] = (fp, check)
            self.keyed.append((name, args))

    def refused(
        self, call: Callable[[], Any], error: type, where: str | None = None
    ) -> None:
        """A refusal: the error, and no key changed. (What any call does
        first, expire grants and purge holds whose time passed, is done
        before the snapshot by reading every balance, usage and the team.)"""
        before = self.run(self.settled_state())
        with pytest.raises(error) as raised:
            self.run(call())
        if where is not None:
            got = raised.value
            assert f"{got.scope}:{got.window}" == where, (got, where)
        assert self.run(deployment_state(self.b)) == before, "a refusal changed state"

    async def settled_state(self) -> dict[bytes, Any]:
        for user in USERS:
            await self.b.get_balance(user)
            await self.b.get_usage(user, "p1")
        if TEAM in self.model.teams:
            await self.b.get_team(TEAM)
        return await deployment_state(self.b)

    # -- replays and time ---------------------------------------------------------

    @precondition(lambda self: self.keyed)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        """A keyed call made again, its amount maybe in another equal form."""
        name, args = data.draw(st.sampled_from(self.keyed))
        args = dict(args)
        for field in ("amount", "part"):
            if args.get(field) is not None:
                args[field] = data.draw(
                    st.sampled_from(same_amount(Decimal(args[field])))
                )
        getattr(self, name)(**args)

    @rule(seconds=st.sampled_from([1, 59, 3600, 5 * 3600, 86400]))
    def advance(self, seconds: int) -> None:
        self.clock.advance(seconds)

    @rule(seconds=st.sampled_from([59, 3 * 3600, 86400]), dry_run=st.booleans())
    def advance_and_sweep(self, seconds: int, dry_run: bool) -> None:
        """The sweep expires what the grants whose expiry just passed had
        left (no call of their users has met them yet); a dry run counts the
        same and changes nothing."""
        was = ms(self.clock())
        live = [g for u in USERS for g in self.model.live_grants(u, was)]
        self.clock.advance(seconds)
        now = ms(self.clock())
        due = [g.remaining for g in live if not g.live(now)]
        before = self.run(deployment_state(self.b)) if dry_run else None
        report = self.run(self.b.sweep_expired_credits(dry_run=dry_run))
        assert (report.count, report.amount) == (len(due), dec(sum(due)))
        if dry_run:
            assert self.run(deployment_state(self.b)) == before
            return
        again = self.run(self.b.sweep_expired_credits())
        assert (again.count, again.amount) == (0, 0)

    # -- after every step -----------------------------------------------------------

    @invariant()
    def money_agrees(self) -> None:
        if self.budget is None:
            return
        m = self.model
        now = self.clock()
        now_ms = ms(now)
        for user in USERS:
            bal = self.run(self.b.get_balance(user))
            total, held = m.total(user, now_ms), m.held(now_ms, user, team=None)
            assert (bal.total, bal.held) == (dec(total), dec(held)), user
            assert bal.available == dec(total - held), user
            grants = [
                (g.id, dec(g.remaining), g.priority, g.expires_ms)
                for g in m.live_grants(user, now_ms)
            ]
            assert [
                (g.id, g.remaining, g.priority, g.expires_at and ms(g.expires_at))
                for g in bal.grants
            ] == grants
            usage = self.run(self.b.get_usage(user, "p1"))
            assert usage["user"].balance == dec(total), user
            for scope, sid in (("user", user), ("project", "p1"), ("global", "")):
                got = usage[scope]
                match = {
                    "user": {"user": user},
                    "project": {"project": "p1"},
                    "global": {},
                }[scope]
                held = m.held(now_ms, **match)
                assert got.held == dec(held), (scope, sid)
                for window, period, cap in (
                    ("daily", day(now), m.caps[0]),
                    ("monthly", month(now), m.caps[1]),
                ):
                    w = getattr(got, window)
                    spent = m.spent_in(period, scope, sid)
                    assert w.spent == dec(spent), (scope, sid, window)
                    if scope == "user":  # (the caps the machine sets)
                        assert w.limit == (None if cap is None else dec(cap))
                        left = None if cap is None else dec(max(0, cap - spent - held))
                        assert w.remaining == left, (sid, window)
        if TEAM not in m.teams:
            return
        team = self.run(self.b.get_team(TEAM))
        t = m.teams[TEAM]
        assert team.balance == dec(t.balance)
        assert team.held == dec(m.held(now_ms, team=TEAM))
        assert set(team.members) == set(t.members)
        for user, member in team.members.items():
            daily, monthly = t.members[user]
            assert member.daily_cap == (None if daily is None else dec(daily))
            assert member.monthly_cap == (None if monthly is None else dec(monthly))
            assert member.spent_today == dec(
                m.team_spent.get((day(now), TEAM, user), 0)
            )
            assert member.spent_this_month == dec(
                m.team_spent.get((month(now), TEAM, user), 0)
            )
            assert member.held == dec(m.held(now_ms, user, team=TEAM))
