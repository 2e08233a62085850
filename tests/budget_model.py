"""The reference model the model-based test (tests/test_model_based.py)
checks a BudgetManager against: DESIGN.md's semantics in memory, written
independently of the Lua scripts, and the users, projects, idempotency keys,
amounts and caps the state machine draws from.

The model keeps integer micro-units (charges and holds round up, credits and
caps round down), daily and monthly caps per user / project / global scope with
per-entity overrides, holds that stop counting at their expiry, balances
(always tracked once a user has one; enforced at admission when
``enforce_balance``), and what each idempotency key was first used for.
``Model.admit`` says whether a request is admitted (and what would remain) or
refused by which scope and window; ``Model.charge`` applies a fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from typing import Any

from hypothesis import strategies as st

from spendgate import UNSET

USERS = ["u1", "u2"]
PROJECTS: list[str | None] = [None, "p1", "p2"]
KEYS: list[str | None] = [None, None, "k1", "k2", "k3"]
NO_CAP = -1

amounts = st.one_of(
    st.decimals(
        min_value=0, max_value=4, places=7, allow_nan=False, allow_infinity=False
    ),
    st.sampled_from([Decimal(0), Decimal("0.000001"), Decimal("1"), Decimal("2.5")]),
)
caps = st.one_of(
    st.none(),
    st.sampled_from(
        [Decimal(0), Decimal("0.5"), Decimal("1.0000005"), Decimal(3), Decimal(8)]
    ),
)
overrides = st.one_of(st.just(UNSET), caps)


def up(amount: Decimal) -> int:
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_CEILING))


def down(amount: Decimal) -> int:
    return int((amount * 1_000_000).to_integral_value(rounding=ROUND_FLOOR))


def dec(micros: int) -> Decimal:
    return Decimal(micros) / 1_000_000


def ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


@dataclass
class Hold:
    user: str
    project: str | None
    amount: int
    expires_ms: int
    state: str = "p"  # p pending, s settled, v voided
    cost: int = 0
    entry: str = ""
    late: bool = False


class Model:
    """DESIGN.md's semantics, in memory."""

    def __init__(self, defaults: dict[str, list[int]], enforce: bool, min_balance: int):
        self.defaults = defaults
        self.enforce = enforce
        self.min_balance = min_balance
        self.overrides: dict[tuple[str, str], dict[str, int]] = {}
        self.spent: dict[tuple[str, str, str], int] = {}
        self.balances: dict[str, int] = {}
        self.holds: dict[str, Hold] = {}
        self.idem: dict[str, tuple[tuple[Any, ...], Any]] = {}

    @staticmethod
    def scopes(user: str, project: str | None) -> list[tuple[str, str]]:
        out = [("user", user)]
        if project is not None:
            out.append(("project", project))
        out.append(("global", ""))
        return out

    def limit(self, scope: str, sid: str, window: str) -> int:
        field = "dl" if window == "daily" else "ml"
        over = self.overrides.get((scope, sid), {})
        if field in over:
            return over[field]
        return self.defaults[scope][0 if window == "daily" else 1]

    @staticmethod
    def period(now: datetime, window: str) -> str:
        return now.strftime("%Y%m%d" if window == "daily" else "%Y%m")

    def spent_in(self, scope: str, sid: str, window: str, now: datetime) -> int:
        return self.spent.get((self.period(now, window), scope, sid), 0)

    def held(self, scope: str, sid: str, now_ms: int) -> int:
        total = 0
        for h in self.holds.values():
            if h.state != "p" or now_ms >= h.expires_ms:
                continue
            if (scope == "user" and h.user == sid) or (
                scope == "project" and h.project == sid
            ):
                total += h.amount
            elif scope == "global":
                total += h.amount
        return total

    def admit(
        self, user: str, project: str | None, requested: int, now: datetime
    ) -> tuple[str, str, int]:
        """("ok", "", room) or ("refused", scope, window)."""
        now_ms = ms(now)
        tightest = NO_CAP
        for scope, sid in self.scopes(user, project):
            held = self.held(scope, sid, now_ms)
            rooms: list[tuple[str, int]] = []
            for window in ("daily", "monthly"):
                cap = self.limit(scope, sid, window)
                if cap >= 0:
                    rooms.append(
                        (window, cap - self.spent_in(scope, sid, window, now) - held)
                    )
            if scope == "user" and self.enforce:
                available = self.balances.get(user, 0) - self.min_balance
                rooms.append(("balance", available - held))
            for window, room in rooms:
                if room < requested or (requested == 0 and room <= 0):
                    return ("refused", f"{scope}:{window}", 0)
                if tightest < 0 or room < tightest:
                    tightest = room
        return ("ok", "", tightest)

    def charge(
        self, user: str, project: str | None, amount: int, now: datetime
    ) -> None:
        for scope, sid in self.scopes(user, project):
            for window in ("daily", "monthly"):
                key = (self.period(now, window), scope, sid)
                self.spent[key] = self.spent.get(key, 0) + amount
        if self.enforce or user in self.balances:
            self.balances[user] = self.balances.get(user, 0) - amount
