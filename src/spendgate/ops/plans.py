"""Plans: ``set_plan``, ``get_plan``, ``list_plans``, ``assign_plan``,
``unassign_plan`` and ``get_user_plan``.

A plan comes from ``set_plan`` (kept in Redis, every instance reloads them
within :data:`~spendgate.ops.pricebooks.REFRESH_SECONDS` of a change) or
from the active price book's ``plans``; ``set_plan``'s wins for the same
id (an operator's run-time setting over the deployed book, as
``set_limits`` over the configured caps), and stays when another book is
activated.

A user has at most one plan: ``"<anchor_ms>|<plan id>"`` in one key, which
a charge script can read in the MGET it already makes. The cycle starts at
the assignment (see :mod:`spendgate.plans.cycle`); assigning again, the
same plan or another, starts a new cycle at once, without pro-rata: the new
cycle's allowance is whole and what was left of the old one is gone.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.core.ids import check_id, user_id_of
from spendgate.core.money import from_micros, limit_micros
from spendgate.core.protocol import Reply
from spendgate.core.windows import from_ms
from spendgate.errors import BudgetUnavailableError, InvalidArgumentError, StorageError
from spendgate.errors.arguments import shown
from spendgate.ops.base import text
from spendgate.ops.pricebooks import PriceBooks
from spendgate.plans.cache import PlanCache, split_assignment
from spendgate.plans.cycle import cycle_at
from spendgate.plans.definitions import plan_document, plan_from_record
from spendgate.plans.models import Plan, UserPlan
from spendgate.pricing.book import NAME_MAX

if TYPE_CHECKING:
    from spendgate.plans.cycle import CyclePeriod
    from spendgate.pricing.engine import PricingEngine

#: the most plans ``set_plan`` keeps (every instance holds them all)
MAX_PLANS = 1000
#: times a read is made again when the user's plan was not the one expected
_ATTEMPTS = 3
_ZERO = Decimal(0)


class Plans(PriceBooks):
    """Plans and users' plans."""

    _plan_cache: PlanCache | None = None

    def _plans(self) -> PlanCache:
        cache = self._plan_cache
        if cache is None:
            cache = self._plan_cache = PlanCache()
        return cache

    async def set_plan(
        self,
        plan_id: str,
        name: str | None = None,
        free_allowance: Any = 0,
        period: CyclePeriod | str = "monthly",
        rate_overrides: Mapping[str, str] | None = None,
        features: Mapping[str, Any] | None = None,
        feature_limits: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Plan:
        """Define (or redefine) a plan, in force on every instance within a
        second; over a price book's plan of the same id.

        :param name: its display name (default: the id)
        :param free_allowance: the free allowance of each period
        :param period: the cycle, anchored at each user's assignment:
            ``daily``, ``weekly``, ``monthly`` (bursar's ``anniversary``),
            ``yearly``, ``rolling_30d``, or ``calendar_month`` (UTC months)
        :param rate_overrides: model -> price expression (``_default`` for
            the other models), before the price book's
        :param features: feature -> value (bursar's truthy rule)
        :param feature_limits: feature -> ``{"max_calls": n, "period":
            "daily"|"weekly"|"monthly"|"yearly", "action":
            "deny"|"warn"|"notify"}``
        :raise PricingConfigError: a plan bursar would refuse (nothing stored)
        :raise InvalidArgumentError: a bad id, or :data:`MAX_PLANS` plans exist
        """
        pid = check_id("plan_id", plan_id, NAME_MAX)
        if name is not None:
            name = check_id("name", name, NAME_MAX)
        document, plan = plan_document(
            pid, name, free_allowance, period, rate_overrides, features, feature_limits
        )
        reply = await self._store.run(
            "plan_set",
            (self.keys.plans, self.keys.plans_rev),
            (
                pid,
                json.dumps(document, sort_keys=True, separators=(",", ":")),
                MAX_PLANS,
            ),
        )
        if reply[0] == Reply.REFUSED:
            raise InvalidArgumentError(f"there may be at most {MAX_PLANS} plans")
        # (the plans are read again by the next call that needs them)
        self._plans_rev_seen = text(reply[1])
        return _copy(plan)

    async def get_plan(self, plan_id: str) -> Plan | None:
        """The plan in force of that id (``None``: there is none)."""
        pid = check_id("plan_id", plan_id, NAME_MAX)
        _, plans = await self._plans_now()
        plan = plans.get(pid)
        return None if plan is None else _copy(plan)

    async def list_plans(self) -> list[Plan]:
        """Every plan in force, by id: ``set_plan``'s and the active price
        book's (``.source`` says which)."""
        _, plans = await self._plans_now()
        return [_copy(plans[pid]) for pid in sorted(plans)]

    async def assign_plan(self, user_id: Any, plan_id: str) -> UserPlan:
        """Put a user on a plan: its cycle starts now (again, when the user
        had a plan: no pro-rata, the new cycle's allowance is whole).

        :raise InvalidArgumentError: no plan of that id is in force
        """
        user = user_id_of(user_id, self._max_id)
        pid = check_id("plan_id", plan_id, NAME_MAX)
        _, plans = await self._plans_now()
        plan = plans.get(pid)
        if plan is None:
            raise InvalidArgumentError(f"no plan {shown(pid)}")
        now_ms = self._now_ms()
        assignment = f"{now_ms}|{pid}"
        await self._store.run(
            "plan_assign", (self.keys.of(user).user_plan(user),), (assignment,)
        )
        self._plans().remember(user, assignment)
        return _user_plan(user, pid, plan, now_ms, now_ms, 0)

    async def unassign_plan(self, user_id: Any) -> bool:
        """Take a user's plan away (no allowance, features or rate overrides
        from then on); ``False`` when the user had none."""
        user = user_id_of(user_id, self._max_id)
        reply = await self._store.run(
            "plan_assign", (self.keys.of(user).user_plan(user),), ("",)
        )
        self._plans().remember(user, "")
        return reply[0] is not None

    async def get_user_plan(self, user_id: Any) -> UserPlan | None:
        """The user's plan and its cycle now (``None``: the user has none).
        ``allowance_remaining`` is the allowance less what the charges of
        this period used of it."""
        user = user_id_of(user_id, self._max_id)
        engine, plans = await self._plans_in_force()
        cache = self._plans()
        guess = cache.guess(user)
        keys = self.keys.of(user)
        for _ in range(_ATTEMPTS):
            now_ms = self._now_ms()
            parts = split_assignment(guess)
            if parts is None:
                counter, mode = keys.user_plan(user), ""
            else:
                plan = plans.get(parts[1])
                period = "monthly" if plan is None else plan.period
                start = cycle_at(parts[0], period, now_ms).start_ms
                counter, mode = keys.allowance(user, start), "s"
            reply = await self._store.run(
                "plan_read", (keys.user_plan(user), counter), (mode, "")
            )
            found = "" if reply[0] is None else text(reply[0])
            if found != guess:  # another plan than expected: read its counter
                cache.remember(user, found)
                guess = found
                continue
            if parts is None:
                return None
            used = 0 if reply[1] is None else int(reply[1])
            anchor, pid = parts
            return _user_plan(user, pid, plans.get(pid), anchor, now_ms, used)
        raise InvalidArgumentError("the user's plan kept changing during the read")

    # -- what the other operations use ----------------------------------------

    async def _plans_now(self) -> tuple[PricingEngine | None, Mapping[str, Plan]]:
        """The plans in force, ``set_plan``'s read now (one round trip)."""
        active = await self.active_pricing()
        await self._load_plans()
        engine = None if active is None else active[1]
        return engine, self._plans().view(engine)

    async def _plans_in_force(self) -> tuple[PricingEngine | None, Mapping[str, Plan]]:
        """The plans in force, as read within the last second."""
        fresh = self._fresh_active()
        active = await self.active_pricing() if fresh is False else fresh
        if self._plans().stale(self._plans_rev_seen):
            await self._load_plans()
        engine = None if active is None else active[1]
        return engine, self._plans().view(engine)

    async def _plan_arg(self, user: str, now_ms: int, lenient: bool = False) -> str:
        """The plan argument of a charge or an admission of ``user`` at
        ``now_ms`` (see ``lua/_allowance.lua``): ``"="`` (``"~"`` when
        ``lenient``) and what the user's plan, as last read, makes of the
        allowance now. A user not known to have a plan costs nothing here.
        While the store does not answer, the plans as last read serve (a
        fact is spooled with it, replayed leniently)."""
        mode = "~" if lenient else "="
        cache = self._plan_cache
        guess = "" if cache is None else cache.guess(user)
        if not guess:
            return mode
        try:
            _, plans = await self._plans_in_force()
        except (BudgetUnavailableError, StorageError):
            plans = self._plans().view(self._active_engine())
        return mode + allowance_arg(guess, plans, now_ms, self._retention_ms - now_ms)

    def _active_engine(self) -> PricingEngine | None:
        """The active book as last read (``None``: none, or never read)."""
        active = self._active
        if active is None or active[0] is None:
            return None
        return self._books.get(active[0])

    def _plans_exist(self, engine: PricingEngine | None) -> bool:
        """Whether any plan may be in force (as of the last read of the
        active book): when not, nothing about plans is read or sent."""
        return self._plans_rev_seen is not None or (
            engine is not None and bool(engine.plans)
        )

    async def _load_plans(self) -> None:
        """Read the plans set with set_plan (one round trip)."""
        reply = await self._store.run(
            "plans_get", (self.keys.plans, self.keys.plans_rev), ()
        )
        revision = None if reply[0] is None else text(reply[0])
        plans = {}
        for i in range(1, len(reply) - 1, 2):
            pid = text(reply[i])
            plans[pid] = plan_from_record(pid, reply[i + 1])
        self._plans().load(revision, plans)
        self._plans_rev_seen = revision


def allowance_arg(
    assignment: str, plans: Mapping[str, Plan], now_ms: int, retain_ms: int
) -> str:
    """What follows the mode of a plan argument (``lua/_allowance.lua``) for
    a user whose plan is ``assignment`` (``""``: none): ``""`` for no plan,
    else ``"<period start>|<allowance>|<counter TTL>|<assignment>"``, the
    period of the user's cycle ``now_ms`` falls in and the plan's allowance
    in micro-units (0 for a plan no longer in force: it gives none), the
    counter kept ``retain_ms`` after the period ends."""
    parts = split_assignment(assignment)
    if parts is None:
        return ""
    plan = plans.get(parts[1])
    if plan is None or not plan.free_allowance:
        return f"0|0|0|{assignment}"
    period = cycle_at(parts[0], plan.period, now_ms)
    ttl_ms = max(1, period.end_ms + retain_ms)
    return (
        f"{period.start_ms}|{limit_micros(plan.free_allowance)}|{ttl_ms}|{assignment}"
    )


def _copy(plan: Plan) -> Plan:
    """A plan the caller may change without changing the one every call
    shares (the compiled rates are immutable, and shared)."""
    return dataclasses.replace(
        plan,
        rate_overrides=dict(plan.rate_overrides),
        features=copy.deepcopy(dict(plan.features)),
        feature_limits=dict(plan.feature_limits),
        config=copy.deepcopy(dict(plan.config)),
    )


def _user_plan(
    user: str,
    plan_id: str,
    plan: Plan | None,
    anchor_ms: int,
    now_ms: int,
    used_micros: int,
) -> UserPlan:
    """A user's plan at ``now_ms``; a plan no longer in force (``None``)
    gives no allowance and no features, on a monthly cycle."""
    period = "monthly" if plan is None else plan.period
    cycle = cycle_at(anchor_ms, period, now_ms)
    allowance = _ZERO if plan is None else plan.free_allowance
    used = from_micros(used_micros)
    return UserPlan(
        user_id=user,
        plan_id=plan_id,
        name=None if plan is None else plan.name,
        features={} if plan is None else copy.deepcopy(dict(plan.features)),
        allowance=allowance,
        allowance_used=used,
        allowance_remaining=max(_ZERO, allowance - used),
        period=period,
        period_start=from_ms(cycle.start_ms),
        resets_at=from_ms(cycle.end_ms),
        assigned_at=from_ms(anchor_ms),
    )
