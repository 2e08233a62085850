"""The money-invariants state machine's rules for credits, charges and
holds: add_credits (with and without expiry, at a priority), record_spend
and deduct (own or on a team's pool), reserve and reserve_up_to, and
settle (below, at, above the estimate, at zero) or release. Each is applied
to the model (tests/money_model.py) and checked against it; see
tests/test_money_invariants.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import strategies as st
from hypothesis.stateful import (
    multiple,
    rule,
)

from conftest import (
    deployment_state,
)
from money_machine import (
    CHARGES,
    KEYS,
    LEASES,
    PROJECTS,
    TEAM,
    USERS,
    amounts,
    positive,
)
from money_model import (
    MHold,
    dec,
    down,
    ms,
    up,
)
from spendgate import (
    BudgetExceededError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidArgumentError,
    LeaseStateError,
    NotATeamMemberError,
    TeamNotFoundError,
)


class ChargeRules:
    # -- credits and plain charges ----------------------------------------------

    @rule(
        user=st.sampled_from(USERS),
        amount=amounts,
        expires=st.sampled_from([None, 60, 3 * 3600, 86400]),
        priority=st.sampled_from([0, 0, 1, -1]),
        key=st.sampled_from(KEYS),
    )
    def credit(self, expires: int | None, **args: Any) -> None:
        at = None if expires is None else self.clock() + timedelta(seconds=expires)
        self.do_credit(at=at, **args)

    def do_credit(
        self,
        user: str,
        amount: Any,
        at: datetime | None,
        priority: int,
        key: str | None,
    ) -> None:
        now = self.now()
        micros = down(Decimal(amount))
        fp = ("credit", user, micros, at, priority)

        def call() -> Any:
            return self.b.add_credits(
                user, amount, key, expires_at=at, priority=priority
            )

        if self.seen(key, fp, call):  # (a replay, even once the expiry passed)
            return
        if at is not None and at <= now:
            self.refused(call, InvalidArgumentError)
            return
        rec = self.run(call())
        assert not rec.replayed and rec.amount == dec(micros)
        self.model.credit(
            user, rec.entry_id, micros, None if at is None else ms(at), priority
        )
        balance = self.model.total(user, ms(now))
        assert rec.balance == dec(balance)

        def check(again: Any) -> None:
            assert again.replayed and again.entry_id == rec.entry_id
            assert again.balance == dec(balance)

        self.remember(
            "do_credit",
            dict(user=user, amount=amount, at=at, priority=priority, key=key),
            fp,
            check,
        )

    @rule(
        target=CHARGES,
        user=st.sampled_from(USERS),
        project=st.sampled_from(PROJECTS),
        amount=amounts,
        key=st.sampled_from(KEYS),
        team=st.sampled_from([None, None, TEAM]),
    )
    def record(self, **args: Any) -> Any:
        return self.do_record(**args)

    def do_record(
        self,
        user: str,
        project: str | None,
        amount: Any,
        key: str | None,
        team: str | None,
    ) -> Any:
        now = self.now()
        micros = up(Decimal(amount))
        fp = ("spend", user, project, micros, team)

        def call() -> Any:
            return self.b.record_spend(
                user, amount, project, idempotency_key=key, team_id=team
            )

        if self.seen(key, fp, call):
            return multiple()
        if team is not None and self.team_refused(team, user, call):
            return multiple()
        rec = self.run(call())
        assert not rec.replayed and rec.amount == dec(micros) and rec.team_id == team
        self.model.charge(rec.entry_id, user, project, micros, now, team=team)

        def check(again: Any) -> None:
            assert again.replayed and again.entry_id == rec.entry_id
            assert again.amount == dec(micros)

        self.remember(
            "do_record",
            dict(user=user, project=project, amount=amount, key=key, team=team),
            fp,
            check,
        )
        return rec.entry_id

    def team_refused(self, team: str, user: str, call: Callable[[], Any]) -> bool:
        """No such team, or not a member: refused, nothing changed."""
        if team not in self.model.teams:
            self.refused(call, TeamNotFoundError)
            return True
        if user not in self.model.teams[team].members:
            self.refused(call, NotATeamMemberError)
            return True
        return False

    @rule(
        target=CHARGES,
        user=st.sampled_from(USERS),
        project=st.sampled_from(PROJECTS),
        amount=amounts,
        key=st.sampled_from(KEYS),
        team=st.sampled_from([None, None, TEAM]),
    )
    def deduct(self, **args: Any) -> Any:
        return self.do_deduct(**args)

    def do_deduct(
        self,
        user: str,
        project: str | None,
        amount: Any,
        key: str | None,
        team: str | None,
    ) -> Any:
        now = self.now()
        micros = up(Decimal(amount))
        fp = ("deduct", user, project, micros, team)

        def call() -> Any:
            return self.b.deduct(user, amount, project, team, key)

        if micros == 0:  # bursar's short-circuit: nothing charged, nor kept
            if key is not None and key in self.idem:
                return multiple()
            if team is not None and team not in self.model.teams:
                return multiple()
            res = self.run(call())
            assert res.entry_id == "" and res.amount == 0
            return multiple()
        if self.seen(key, fp, call):
            return multiple()
        if team is not None and self.team_refused(team, user, call):
            return multiple()
        where = self.model.user_refusal(user, micros, now, team is None)
        if where is not None:
            where = f"user:{where}"
        elif team is not None:
            where = self.model.team_refusal(team, user, micros, now)
        if where is not None:
            error = (
                InsufficientCreditsError
                if where.endswith("balance")
                else BudgetExceededError
            )
            self.refused(call, error, where)
            return multiple()
        res = self.run(call())
        assert not res.replayed and res.amount == dec(micros) and res.team_id == team
        self.model.charge(
            res.entry_id, user, project, micros, now, debit=True, team=team
        )
        after = (
            self.model.teams[team].balance
            if team is not None
            else self.model.total(user, ms(now))
        )
        assert res.balance_after == dec(after)

        def check(again: Any) -> None:
            assert again.replayed and again.entry_id == res.entry_id
            assert again.amount == dec(micros) and again.balance_after == dec(after)

        self.remember(
            "do_deduct",
            dict(user=user, project=project, amount=amount, key=key, team=team),
            fp,
            check,
        )
        return res.entry_id

    # -- holds ------------------------------------------------------------------

    @rule(
        target=LEASES,
        user=st.sampled_from(USERS),
        project=st.sampled_from(PROJECTS),
        amount=amounts,
        ttl=st.sampled_from([30, 3600, 2 * 86400]),
        key=st.sampled_from(KEYS),
        team=st.sampled_from([None, None, TEAM]),
    )
    def reserve(self, **args: Any) -> Any:
        return self.do_reserve(**args)

    @rule(
        target=LEASES,
        user=st.sampled_from(USERS),
        least=amounts,
        extra=amounts,
        ttl=st.sampled_from([30, 3600]),
        key=st.sampled_from(KEYS),
        team=st.sampled_from([None, None, TEAM]),
    )
    def reserve_up_to(self, least: Decimal, extra: Decimal, **args: Any) -> Any:
        return self.do_reserve(project=None, amount=least, most=least + extra, **args)

    def do_reserve(
        self,
        user: str,
        project: str | None,
        amount: Any,
        ttl: int,
        key: str | None,
        team: str | None,
        most: Any = None,
    ) -> Any:
        """``reserve``, or with ``most`` ``reserve_up_to`` (``amount`` the
        least): it holds the tightest room left, at most ``most``."""
        now = self.now()
        micros = up(Decimal(amount))
        fp: tuple[Any, ...] = ("reserve", user, project, micros, ttl, team)
        if most is not None:
            fp = ("upto", user, project, micros, up(Decimal(most)), ttl, team)

        def call() -> Any:
            if most is None:
                return self.b.reserve(user, amount, project, ttl, key, team)
            return self.b.reserve_up_to(user, most, amount, project, ttl, key, team)

        if self.seen(key, fp, call):
            return multiple()
        if team is not None and self.team_refused(team, user, call):
            return multiple()
        where = self.model.user_refusal(
            user, micros, now, team is None and self.model.enforce
        )
        if where is not None:
            where = f"user:{where}"
        elif team is not None:
            where = self.model.team_refusal(team, user, micros, now)
        if where is not None:
            self.refused(call, BudgetExceededError, where)
            return multiple()
        if most is not None:
            micros = self.model.granted(user, now, up(Decimal(most)), team)
        lease = self.run(call())
        assert not lease.replayed and lease.amount == dec(micros)
        expires = ms(now) + ttl * 1000
        assert ms(lease.expires_at) == expires
        self.model.holds[lease.id] = MHold(user, project, team, micros, expires)

        def check(again: Any) -> None:
            assert again.replayed and again.id == lease.id
            assert ms(again.expires_at) == expires and again.amount == dec(micros)

        args = dict(user=user, project=project, amount=amount, ttl=ttl, key=key)
        self.remember("do_reserve", dict(args, team=team, most=most), fp, check)
        return lease.id

    @rule(
        target=CHARGES,
        lease_id=LEASES,
        how=st.sampled_from(["below", "equal", "above", "zero"]),
        extra=positive,
    )
    def settle(self, lease_id: str, how: str, extra: Decimal) -> Any:
        now = self.now()
        hold = self.model.holds[lease_id]
        micros = {
            "below": max(0, hold.amount - up(extra)),
            "equal": hold.amount,
            "above": hold.amount + up(extra),
            "zero": 0,
        }[how]
        if hold.state == "s" and how == "equal":
            micros = hold.cost  # the same settle again
        amount = dec(micros)

        def call() -> Any:
            return self.b.settle(lease_id, amount)

        if hold.state == "v":
            self.refused(call, LeaseStateError)
            return multiple()
        if hold.state == "s":
            before = self.run(deployment_state(self.b))
            if micros != hold.cost:
                with pytest.raises(IdempotencyConflictError):
                    self.run(call())
            else:
                rec = self.run(call())
                assert rec.replayed and rec.entry_id == hold.entry
            assert self.run(deployment_state(self.b)) == before
            return multiple()
        rec = self.run(call())
        assert not rec.replayed and rec.amount == amount
        assert rec.late == (ms(now) >= hold.expires_ms)
        assert rec.estimate == dec(hold.amount)
        hold.state, hold.cost, hold.entry = "s", micros, rec.entry_id
        self.model.charge(
            rec.entry_id, hold.user, hold.project, micros, now, team=hold.team
        )
        return rec.entry_id

    @rule(lease_id=LEASES)
    def release(self, lease_id: str) -> None:
        now = self.now()
        hold = self.model.holds[lease_id]
        if hold.state == "s":
            self.refused(lambda: self.b.release(lease_id), LeaseStateError)
            return
        counting = hold.counting(ms(now))
        assert self.run(self.b.release(lease_id)) is counting
        hold.state = "v"
