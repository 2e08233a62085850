"""What a manager keeps of the plans between calls, so that pricing a charge
for a plan's user costs no round trip of its own.

- The plans set with ``set_plan``, reloaded when their revision moves (the
  revision is read with the active price book, at most every second).
- The plans in force: the active book's ``plans`` under those set with
  ``set_plan`` (which win for the same id), made once per book and revision.
- Each user's plan as last read: a *guess*. Every call that depends on it
  sends it to its script, which compares it with the user's plan in Redis
  and answers with the real one when they differ (the call is then made
  again): a stale guess costs a retry, never a wrong price or count. The
  guesses are bounded (:data:`USERS_MAX`, the oldest written go first).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from spendgate.plans.definitions import plan_from_book

if TYPE_CHECKING:
    from spendgate.plans.models import Plan
    from spendgate.pricing.engine import PricingEngine

__all__ = ["USERS_MAX", "PlanCache", "split_assignment"]

#: the users whose plan a manager remembers
USERS_MAX = 10_000


def split_assignment(assignment: str) -> tuple[int, str] | None:
    """A user's plan as stored, ``"<anchor_ms>|<plan id>"``: the anchor and
    the plan id (``None`` for ``""``, no plan)."""
    if not assignment:
        return None
    anchor, _, plan_id = assignment.partition("|")
    return int(anchor), plan_id


class PlanCache:
    """One manager's plans and users' plans, as last read."""

    __slots__ = ("_book", "_book_plans", "_users", "_view", "_view_of", "registry")

    def __init__(self) -> None:
        #: the plans set with set_plan, and the revision they are of
        #: (``None`` until loaded)
        self.registry: tuple[str | None, dict[str, Plan]] | None = None
        self._book: PricingEngine | None = None
        self._book_plans: dict[str, Plan] = {}
        self._view: dict[str, Plan] = {}
        self._view_of: tuple[object, object] | None = None
        self._users: dict[str, str] = {}

    def stale(self, revision: str | None) -> bool:
        """Whether the plans set with set_plan must be read again."""
        return self.registry is None or self.registry[0] != revision

    def load(self, revision: str | None, plans: dict[str, Plan]) -> None:
        """The plans set with set_plan, as just read."""
        self.registry = (revision, plans)

    def view(self, engine: PricingEngine | None) -> Mapping[str, Plan]:
        """The plans in force under ``engine`` (the active book)."""
        registry = self.registry
        key = (engine, registry)
        if self._view_of is not None and self._view_of[0] is engine:
            if self._view_of[1] is registry:
                return self._view
        self._view = {**self._plans_of(engine), **(registry[1] if registry else {})}
        self._view_of = key
        return self._view

    def _plans_of(self, engine: PricingEngine | None) -> dict[str, Plan]:
        if engine is None:
            return {}
        if self._book is not engine:
            self._book_plans = {
                plan_id: plan_from_book(plan_id, config)
                for plan_id, config in engine.config.get("plans", {}).items()
            }
            self._book = engine
        return self._book_plans

    def guess(self, user: str) -> str:
        """The user's plan as last read (``""``: none, or not known)."""
        return self._users.get(user, "")

    def remember(self, user: str, assignment: str) -> None:
        """The user's plan as just read or written."""
        users = self._users
        users.pop(user, None)
        users[user] = assignment
        if len(users) > USERS_MAX:
            del users[next(iter(users))]
