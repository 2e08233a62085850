"""The exact model the money-invariants state machine
(tests/test_money_invariants.py) checks a BudgetManager against: README's
"Grants, balances and refunds", "Teams", "Corrections" and deduct rules, in
memory, in integer micro-units, written from the docs and not from the
scripts.

Per user: the balance outside grants (negative: a debt), the grants (what is
left, priority, expiry, id), whether the user has a balance at all; the spent
counters of every scope per day and month; every hold (the user's own or a
team's); every charge with what it drew from where (for its refunds); each
team's pool, members and their spending on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal

NEVER = 10**13  # a never-expiring grant sorts after every expiring one


def up(amount: Decimal) -> int:
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def down(amount: Decimal) -> int:
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_FLOOR))


def toward_zero(amount: Decimal) -> int:
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_DOWN))


def dec(micros: int) -> Decimal:
    return Decimal(micros) / 1_000_000


def ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass
class MGrant:
    id: str
    priority: int
    expires_ms: int | None
    remaining: int

    def order(self) -> tuple[int, int, str]:
        return (
            self.priority,
            NEVER if self.expires_ms is None else self.expires_ms,
            self.id,
        )

    def live(self, now_ms: int) -> bool:
        return self.expires_ms is None or self.expires_ms > now_ms


@dataclass
class MHold:
    user: str
    project: str | None
    team: str | None
    amount: int
    expires_ms: int
    state: str = "p"  # p pending, s settled, v released
    cost: int = 0
    entry: str = ""

    def counting(self, now_ms: int) -> bool:
        return self.state == "p" and now_ms < self.expires_ms


@dataclass
class MCharge:
    user: str
    project: str | None
    team: str | None
    amount: int
    day: str
    month: str
    #: (grant id or "L", amount) in draw order; None: took nothing off a balance
    draws: list[tuple[str, int]] | None
    refunded: int = 0


@dataclass
class MTeam:
    balance: int
    members: dict[str, tuple[int | None, int | None]] = field(default_factory=dict)


class MoneyModel:
    """What the docs say the balances, counters, holds and pools are."""

    def __init__(self, enforce: bool, floor: int, caps: tuple[int | None, int | None]):
        self.enforce = enforce
        self.floor = floor
        self.caps = caps  # the user's daily and monthly caps (None: none)
        self.outside: dict[str, int] = {}  # has a key: the user has a balance
        self.grants: dict[str, dict[str, MGrant]] = {}
        self.spent: dict[tuple[str, str, str], int] = {}
        self.team_spent: dict[tuple[str, str, str], int] = {}
        self.holds: dict[str, MHold] = {}
        self.charges: dict[str, MCharge] = {}
        self.teams: dict[str, MTeam] = {}

    # -- reads ------------------------------------------------------------

    def live_grants(self, user: str, now_ms: int) -> list[MGrant]:
        return sorted(
            (
                g
                for g in self.grants.get(user, {}).values()
                if g.live(now_ms) and g.remaining > 0
            ),
            key=MGrant.order,
        )

    def total(self, user: str, now_ms: int) -> int:
        granted = sum(g.remaining for g in self.live_grants(user, now_ms))
        return self.outside.get(user, 0) + granted

    def held(self, now_ms: int, user: str | None = None, **match: object) -> int:
        return sum(
            h.amount
            for h in self.holds.values()
            if h.counting(now_ms)
            and (user is None or h.user == user)
            and all(getattr(h, k) == v for k, v in match.items())
        )

    def spent_in(self, period: str, scope: str, sid: str) -> int:
        return self.spent.get((period, scope, sid), 0)

    # -- admission ----------------------------------------------------------

    def user_refusal(
        self, user: str, requested: int, now: datetime, balance: bool
    ) -> str | None:
        """The window that refuses (``daily``/``monthly``/``balance``) or None."""
        now_ms = ms(now)
        # (every hold of the user's, a team's too, counts against the caps;
        # only the user's own against the balance: a team's keeps the pool's)
        held = self.held(now_ms, user)
        for window, cap, period in (
            ("daily", self.caps[0], day(now)),
            ("monthly", self.caps[1], month(now)),
        ):
            if cap is not None:
                room = cap - self.spent_in(period, "user", user) - held
                if room < requested or (requested == 0 and room <= 0):
                    return window
        if balance:
            own = self.held(now_ms, user, team=None)
            room = self.total(user, now_ms) - own - self.floor
            if room < requested or (requested == 0 and room <= 0):
                return "balance"
        return None

    def granted(self, user: str, now: datetime, most: int, team: str | None) -> int:
        """What reserve_up_to holds (once admitted for its least): ``most``,
        or less, the tightest room left under the user's caps, the balance
        (enforced, not for a team hold), the member's caps and the pool."""
        now_ms = ms(now)
        held = self.held(now_ms, user)
        rooms = [most]
        for cap, period in ((self.caps[0], day(now)), (self.caps[1], month(now))):
            if cap is not None:
                rooms.append(cap - self.spent_in(period, "user", user) - held)
        if team is None and self.enforce:
            own = self.held(now_ms, user, team=None)
            rooms.append(self.total(user, now_ms) - own - self.floor)
        if team is not None:
            t = self.teams[team]
            mine = self.held(now_ms, user, team=team)
            for cap, period in zip(
                t.members[user], (day(now), month(now)), strict=True
            ):
                if cap is not None:
                    rooms.append(
                        cap - self.team_spent.get((period, team, user), 0) - mine
                    )
            rooms.append(t.balance - self.held(now_ms, team=team))
        return min(rooms)

    def team_refusal(
        self, team: str, user: str, requested: int, now: datetime
    ) -> str | None:
        """``team_member:daily`` / ``team_member:monthly`` / ``team:balance``."""
        now_ms = ms(now)
        t = self.teams[team]
        held = self.held(now_ms, user, team=team)
        caps = t.members[user]
        for window, cap, period in (
            ("daily", caps[0], day(now)),
            ("monthly", caps[1], month(now)),
        ):
            if cap is not None:
                room = cap - self.team_spent.get((period, team, user), 0) - held
                if room < requested or (requested == 0 and room <= 0):
                    return f"team_member:{window}"
        room = t.balance - self.held(now_ms, team=team)
        if room < requested or (requested == 0 and room <= 0):
            return "team:balance"
        return None

    # -- facts ------------------------------------------------------------

    def credit(
        self,
        user: str,
        grant_id: str,
        amount: int,
        expires_ms: int | None,
        priority: int,
    ) -> None:
        outside = self.outside.get(user, 0)
        paid = min(amount, max(0, -outside))
        self.outside[user] = outside + paid
        if amount - paid > 0:
            self.grants.setdefault(user, {})[grant_id] = MGrant(
                grant_id, priority, expires_ms, amount - paid
            )

    def count(
        self,
        user: str,
        project: str | None,
        amount: int,
        now: datetime,
        sign: int = 1,
        when: tuple[str, str] | None = None,
    ) -> None:
        d, m = when or (day(now), month(now))
        scopes = [("user", user), ("global", "")]
        if project is not None:
            scopes.append(("project", project))
        for period in (d, m):
            for scope, sid in scopes:
                key = (period, scope, sid)
                if sign > 0:
                    self.spent[key] = self.spent.get(key, 0) + amount
                elif key in self.spent:
                    self.spent[key] = max(0, self.spent[key] - amount)

    def draw(
        self, user: str, amount: int, now_ms: int, debit: bool
    ) -> list[tuple[str, int]] | None:
        """Take ``amount`` off the user's balance, in draw order; None when
        the charge takes nothing off a balance."""
        if user not in self.outside and not (debit or self.enforce):
            return None
        outside = self.outside.get(user, 0)
        parts: list[tuple[str, int]] = []
        left, own = amount, 0
        for g in self.live_grants(user, now_ms):
            if outside > 0 and (
                g.priority > 0 or (g.priority == 0 and g.expires_ms is None)
            ):
                own = min(outside, left)
                outside, left = outside - own, left - own
            if left == 0:
                break
            take = min(g.remaining, left)
            g.remaining -= take
            left -= take
            parts.append((g.id, take))
        own += left
        if own:
            parts.append(("L", own))
        self.outside[user] = self.outside.get(user, 0) - own
        return parts

    def charge(
        self,
        entry: str,
        user: str,
        project: str | None,
        amount: int,
        now: datetime,
        debit: bool = False,
        team: str | None = None,
    ) -> None:
        if amount == 0:
            return
        self.count(user, project, amount, now)
        if team is None:
            draws = self.draw(user, amount, ms(now), debit)
        else:
            draws = None
            self.teams[team].balance -= amount
            for period in (day(now), month(now)):
                key = (period, team, user)
                self.team_spent[key] = self.team_spent.get(key, 0) + amount
        self.charges[entry] = MCharge(
            user, project, team, amount, day(now), month(now), draws
        )

    def refund(self, entry: str, amount: int, now: datetime) -> int | None:
        """Give ``amount`` of the charge back; the balance (or pool) after."""
        c = self.charges[entry]
        now_ms = ms(now)
        self.count(c.user, c.project, amount, now, -1, (c.day, c.month))
        skip, give = c.refunded, amount
        c.refunded += amount
        if c.team is not None:
            for period in (c.day, c.month):
                key = (period, c.team, c.user)
                if key in self.team_spent:
                    self.team_spent[key] = max(0, self.team_spent[key] - amount)
            self.teams[c.team].balance += amount
            return self.teams[c.team].balance
        if c.draws is None:
            return None
        for source, part in reversed(c.draws):
            if give == 0:
                break
            done = min(skip, part)
            back = min(part - done, give)
            skip, give = skip - done, give - back
            if back == 0:
                continue
            if source == "L":
                self.outside[c.user] += back
                continue
            g = self.grants[c.user][source]
            if g.live(now_ms):
                g.remaining += back
            # (a grant expired since gets nothing back: that part expires)
        return self.total(c.user, now_ms)


def day(now: datetime) -> str:
    return now.strftime("%Y%m%d")


def month(now: datetime) -> str:
    return now.strftime("%Y%m")
