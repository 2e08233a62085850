"""The money-invariants state machine's rules for refunds, corrections and
teams: refund (all or part, of any charge made), adjust_usage, and a team's
creation, credits and members. See tests/test_money_invariants.py.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import (
    rule,
)

from money_machine import (
    CHARGES,
    KEYS,
    TEAM,
    USERS,
    amounts,
    caps,
    positive,
)
from money_model import (
    MTeam,
    day,
    dec,
    down,
    month,
    toward_zero,
    up,
)
from spendgate import (
    InvalidArgumentError,
    NotATeamMemberError,
    RefundExceedsChargeError,
    TeamExistsError,
    TeamNotFoundError,
    UnknownEntryError,
)


class TeamRules:
    # -- refunds and corrections ----------------------------------------------------

    @rule(
        entry=CHARGES,
        part=st.one_of(st.none(), positive),
        key=st.sampled_from(KEYS),
    )
    def refund(self, **args: Any) -> None:
        self.do_refund(**args)

    def do_refund(self, entry: str, part: Any, key: str | None) -> None:
        now = self.now()
        micros = None if part is None else down(Decimal(part))
        if micros == 0:
            return
        fp = ("refund", entry, micros)

        def call() -> Any:
            return self.b.refund(entry, part, idempotency_key=key)

        if self.seen(key, fp, call):
            return
        charge = self.model.charges.get(entry)
        if charge is None:  # a charge of 0 keeps no record
            self.refused(call, UnknownEntryError)
            return
        left = charge.amount - charge.refunded
        amount = left if micros is None else micros
        if amount == 0 or amount > left:
            self.refused(call, RefundExceedsChargeError)
            return
        r = self.run(call())
        after = self.model.refund(entry, amount, now)
        assert not r.replayed and r.refunded == dec(amount)
        assert r.refundable_left == dec(left - amount)
        assert r.balance_after == (None if after is None else dec(after))
        assert r.team_id == charge.team
        first = (r.entry_id, r.refunded, r.refundable_left, r.balance_after)

        def check(again: Any) -> None:
            assert again.replayed
            assert (
                again.entry_id,
                again.refunded,
                again.refundable_left,
                again.balance_after,
            ) == first

        self.remember("do_refund", dict(entry=entry, part=part, key=key), fp, check)

    @rule(
        who=st.sampled_from(
            [("user", "u1"), ("user", "u2"), ("project", "p1"), ("global", "")]
        ),
        amount=st.decimals(min_value=-4, max_value=4, places=7).filter(
            lambda a: toward_zero(a) if a < 0 else up(a)
        ),
        window=st.sampled_from(["daily", "monthly"]),
        key=st.sampled_from(KEYS),
        back=st.sampled_from([None, None, 1]),
    )
    def adjust(self, back: int | None, **args: Any) -> None:
        """The current window's counter, or yesterday's window's (``at=``):
        what refunds of yesterday's charges lowered shows in ``spent_after``."""
        at = None if back is None else self.clock() - timedelta(days=back)
        self.do_adjust(at=at, **args)

    def do_adjust(
        self,
        who: tuple[str, str],
        amount: Any,
        window: str,
        key: str | None,
        at: datetime | None,
    ) -> None:
        now = self.now()
        a = Decimal(amount)
        micros = toward_zero(a) if a < 0 else up(a)
        when = now if at is None else at
        period = day(when) if window == "daily" else month(when)
        fp = ("adjust", who, micros, window, period)
        scope, sid = who

        def call() -> Any:
            return self.b.adjust_usage(
                scope, sid or None, amount, window, idempotency_key=key, at=at
            )  # type: ignore[arg-type]

        if kept_until(when, window) <= now:  # (its counters are no longer kept)
            self.refused(call, InvalidArgumentError)
            return
        if self.seen(key, fp, call):
            return
        counter = self.model.spent.get((period, scope, sid), 0)
        applied = max(micros, -counter)
        done = self.run(call())
        self.model.spent[(period, scope, sid)] = counter + applied
        assert not done.replayed
        assert done.applied == dec(applied) and done.spent_after == dec(
            counter + applied
        )
        first = (done.entry_id, done.applied, done.spent_after)

        def check(again: Any) -> None:
            assert (
                again.replayed
                and (again.entry_id, again.applied, again.spent_after) == first
            )

        args = dict(who=who, amount=amount, window=window, key=key, at=at)
        self.remember("do_adjust", args, fp, check)

    # -- teams ------------------------------------------------------------------

    @rule(initial=amounts)
    def create_team(self, initial: Decimal) -> None:
        self.now()
        if TEAM in self.model.teams:
            self.refused(
                lambda: self.b.create_team(TEAM, initial_balance=initial),
                TeamExistsError,
            )
            return
        team = self.run(self.b.create_team(TEAM, initial_balance=initial))
        assert team.balance == dec(down(initial))
        self.model.teams[TEAM] = MTeam(down(initial))

    @rule(amount=positive.filter(lambda a: down(a) > 0), key=st.sampled_from(KEYS))
    def credit_team(self, **args: Any) -> None:
        self.do_credit_team(**args)

    def do_credit_team(self, amount: Any, key: str | None) -> None:
        self.now()
        micros = down(Decimal(amount))
        fp = ("team_credit", TEAM, micros)

        def call() -> Any:
            return self.b.credit_team(TEAM, amount, key)

        if self.seen(key, fp, call):
            return
        if TEAM not in self.model.teams:
            self.refused(call, TeamNotFoundError)
            return
        rec = self.run(call())
        self.model.teams[TEAM].balance += micros
        balance = self.model.teams[TEAM].balance
        assert not rec.replayed and rec.balance == dec(balance)

        def check(again: Any) -> None:
            assert again.replayed and again.entry_id == rec.entry_id
            assert again.balance == dec(balance)

        self.remember("do_credit_team", dict(amount=amount, key=key), fp, check)

    @rule(user=st.sampled_from(USERS), daily=caps, monthly=caps)
    def add_member(
        self, user: str, daily: Decimal | None, monthly: Decimal | None
    ) -> None:
        self.now()

        def call() -> Any:
            return self.b.add_team_member(
                TEAM, user, daily_cap=daily, monthly_cap=monthly
            )

        if TEAM not in self.model.teams:
            self.refused(call, TeamNotFoundError)
            return
        members = self.model.teams[TEAM].members
        assert self.run(call()) is (user not in members)
        members[user] = (
            None if daily is None else down(daily),
            None if monthly is None else down(monthly),
        )

    @rule(user=st.sampled_from(USERS))
    def remove_member(self, user: str) -> None:
        self.now()

        def call() -> Any:
            return self.b.remove_team_member(TEAM, user)

        if TEAM not in self.model.teams:
            self.refused(call, TeamNotFoundError)
            return
        if user not in self.model.teams[TEAM].members:
            self.refused(call, NotATeamMemberError)
            return
        self.run(call())
        del self.model.teams[TEAM].members[user]


def kept_until(moment: datetime, window: str) -> datetime:
    """When the counters of the window holding ``moment`` stop being kept:
    ``counter_retention_seconds`` (2 days) after its end."""
    start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if window == "daily":
        end = start + timedelta(days=1)
    else:
        first = start.replace(day=1)
        end = (first + timedelta(days=32)).replace(day=1)
    return end + timedelta(days=2)
