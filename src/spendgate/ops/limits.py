"""Limits and usage: the operators' side. Per-entity cap overrides live in
Redis and take effect on the next call; usage reads every scope in one round
trip."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any

from spendgate.config import DEFAULT_CAPS
from spendgate.core.ids import check_id, check_optional_id, user_id_of
from spendgate.core.money import from_micros, limit_micros
from spendgate.core.protocol import LIMIT_DEFAULT, LIMIT_KEEP, NO_CAP
from spendgate.core.windows import from_ms
from spendgate.errors import InvalidArgumentError, Scope
from spendgate.models import Limits, ScopeUsage, WindowUsage
from spendgate.ops.base import Operations, text


class _Unset(Enum):
    UNSET = 0


#: "leave this limit as it is" in :meth:`BudgetManager.set_limits`
UNSET = _Unset.UNSET

#: where each scope's default caps (daily, then monthly) sit in
#: ``Operations._defaults``, which follows the order of DEFAULT_CAPS
_DEFAULTS_AT = {
    scope: slice(i, i + 2)
    for i, (scope, window, _) in enumerate(DEFAULT_CAPS)
    if window == "daily"
}


class LimitsAndUsage(Operations):
    """``set_limits``, ``clear_limits`` and ``get_usage``."""

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
                encoded.append(LIMIT_KEEP)
            elif value is None:
                encoded.append(NO_CAP)
            else:
                encoded.append(str(limit_micros(value)))
        reply = await self._store.run(
            "set_limits", (self.keys.limits(kind, sid),), tuple(encoded)
        )
        return self._limits(kind, sid, reply)

    async def clear_limits(self, scope: Scope, scope_id: str | None = None) -> Limits:
        """Drop an entity's overrides: it follows the configured defaults again."""
        kind, sid = self._scope_id(scope, scope_id)
        reply = await self._store.run(
            "set_limits",
            (self.keys.limits(kind, sid),),
            (LIMIT_DEFAULT, LIMIT_DEFAULT),
        )
        return self._limits(kind, sid, reply)

    def _limits(self, scope: Scope, scope_id: str, reply: list[Any]) -> Limits:
        defaults = self._defaults[_DEFAULTS_AT[scope]]
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
        reply = await self._store.run(
            "usage",
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
            balance = None
            if scope == "user":  # shown whether enforced or not: 0 when none
                balance = from_micros(int(text(balance_m or b"0").split("|", 1)[0]))
            usage[scope] = ScopeUsage(
                scope=scope,
                scope_id=scope_id,
                daily=_window_usage(int(ds), int(held_m), int(dl), day_end),
                monthly=_window_usage(int(ms), int(held_m), int(ml), month_end),
                held=from_micros(int(held_m)),
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
