"""Limits and usage: the operators' side. Per-entity cap overrides live in
Redis and take effect on the next call; usage reads every scope in one round
trip."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from spendgate.config import DEFAULT_CAPS
from spendgate.core.ids import (
    check_capped_model,
    check_id,
    check_optional_id,
    user_id_of,
)
from spendgate.core.keys import Keys
from spendgate.core.money import from_micros, limit_micros
from spendgate.core.protocol import LIMIT_DEFAULT, LIMIT_KEEP, NO_CAP
from spendgate.core.windows import Windows, from_ms
from spendgate.errors import InvalidArgumentError, Scope
from spendgate.errors.arguments import shown
from spendgate.models import Limits, ModelUsage, ScopeUsage, WindowUsage
from spendgate.ops.base import Operations, text
from spendgate.ops.bucket_usage import with_other_buckets
from spendgate.ops.cap_actions import decode_action, encode_action


class _Unset(Enum):
    UNSET = 0


#: "leave this limit as it is" in :meth:`BudgetManager.set_limits`
UNSET = _Unset.UNSET

#: the windows of a cap override, in the order set_limits.lua takes them
#: (the cap action follows them)
OVERRIDE_WINDOWS = ("daily", "monthly", "per_minute", "weekly")

#: where each default cap sits in ``Operations._defaults``, which follows
#: the order of DEFAULT_CAPS: ``(scope, window) -> index``
_DEFAULTS_AT = {(scope, window): i for i, (scope, window, _) in enumerate(DEFAULT_CAPS)}


class LimitsAndUsage(Operations):
    """``set_limits``, ``clear_limits`` and ``get_usage``."""

    def _scope_id(self, scope: object, scope_id: object) -> tuple[Scope, str]:
        if scope == "global":
            return "global", ""
        if scope not in ("user", "project"):
            raise InvalidArgumentError(
                f"scope must be 'user', 'project' or 'global', not {shown(scope)}"
            )
        name = "user_id" if scope == "user" else "project_id"
        return scope, check_id(name, scope_id, self._max_id)

    def _capped_keys(self, scope: Scope, scope_id: str) -> Keys:
        """Where one entity's per-model caps, weekly and per-minute caps and
        cap action are kept: a user's in the user's bucket; a project's or
        the platform's nowhere on a sharded deployment (no bucket sees its
        whole spend: spendgate.core.shards)."""
        if scope == "user":
            return self.keys.of(scope_id)
        self._decided_in_one_bucket(
            f"{scope} weekly, per-minute and per-model caps and cap actions"
            " cannot be kept",
            "it sees only its own users' spend (daily and monthly caps are"
            " lent to the buckets)",
        )
        return self.keys

    async def _set_override(
        self, scope: Scope, scope_id: str, encoded: tuple[str, ...]
    ) -> list[Any]:
        """set_limits.lua on one entity's overrides. Sharded, a project's or
        the platform's daily and monthly caps are written in every bucket,
        each admitting against them what the root lends it
        (spendgate.ops.escrow_admission); the first bucket's answer is the
        answer."""
        daily_monthly_only = all(part == LIMIT_KEEP for part in encoded[2:]) or all(
            part == LIMIT_DEFAULT for part in encoded
        )
        if scope == "user" or not daily_monthly_only:
            keys = self._capped_keys(scope, scope_id)
            return list(
                await self._store.run(
                    "set_limits", (keys.limits(scope, scope_id),), encoded
                )
            )
        replies = await asyncio.gather(
            *(
                self._store.run("set_limits", (keys.limits(scope, scope_id),), encoded)
                for keys in self.keys.buckets()
            )
        )
        return list(replies[0])

    async def set_limits(
        self,
        scope: Scope,
        scope_id: str | None = None,
        *,
        daily: Any = UNSET,
        monthly: Any = UNSET,
        weekly: Any = UNSET,
        per_minute: Any = UNSET,
        action: Any = UNSET,
        thresholds: Any = None,
        model: str | None = None,
    ) -> Limits:
        """Override the caps of one entity, effective on the next call.

        :param scope: ``"user"``, ``"project"`` or ``"global"``
        :param scope_id: the user or project id (ignored for ``"global"``)
        :param model: set that model's caps in the scope instead (daily and
            monthly; ``None`` or omitted = none, as a model cap has no
            default): calls for the model (``check_availability``,
            ``reserve``, ``deduct`` with ``model=``, facts with their
            ``model``) count and are checked against them as well as against
            the scope's own caps. Needs ``model_caps``
        :param daily: the new daily cap; ``None`` = no cap; omitted = unchanged
        :param monthly: the same, for the month
        :param weekly: the same, for the ISO week (needs weekly caps on:
            ``weekly_caps`` or a weekly default)
        :param per_minute: the same, for the sliding minute (needs
            ``per_minute_caps``: facts then read the scopes' overrides)
        :param action: what the entity's daily and monthly caps do (needs
            ``cap_actions``): ``"deny"`` refuses at the cap, ``"warn"``
            admits past it and the charge's result carries the thresholds
            it reached, ``"notify"`` admits past it; with each, every
            threshold reached is one event, once per window. ``None`` drops
            the action (refused at the caps, no events); omitted = unchanged
        :param thresholds: with ``action``, fractions of the cap in (0, 1]
            whose crossing is a ``credits.cap_warning`` event (reaching the
            cap itself is ``credits.cap_reached``, whatever the list);
            default 0.5, 0.8, 0.95 and 1 for warn and notify, 1 for deny
        :raise InvalidArgumentError: a weekly or per-minute cap where the
            deployment does not count that window, an action where cap
            actions are off, an unknown action, bad thresholds
        """
        kind, sid = self._scope_id(scope, scope_id)
        if model is not None:
            if weekly is not UNSET or per_minute is not UNSET:
                raise InvalidArgumentError(
                    "a per-model cap is daily or monthly: no weekly or "
                    "per_minute cap per model"
                )
            if action is not UNSET or thresholds is not None:
                raise InvalidArgumentError(
                    "a per-model cap has no action: it refuses at the cap"
                )
            return await self._set_model_limits(kind, sid, model, daily, monthly)
        part = self._action_part(action, thresholds)
        if weekly is not UNSET and not self.config.weekly_enabled:
            raise InvalidArgumentError(
                "weekly caps are off in this deployment: set weekly_caps=true "
                "(SPENDGATE_WEEKLY_CAPS) or a weekly default, in every process"
            )
        if per_minute is not UNSET and not self.config.per_minute_caps:
            raise InvalidArgumentError(
                "per-entity per-minute caps are off in this deployment: set "
                "per_minute_caps=true (SPENDGATE_PER_MINUTE_CAPS) in every process"
            )
        encoded = []
        for value in (daily, monthly, per_minute, weekly):
            if value is UNSET:
                encoded.append(LIMIT_KEEP)
            elif value is None:
                encoded.append(NO_CAP)
            else:
                encoded.append(str(limit_micros(value)))
        encoded.append(part)
        reply = await self._set_override(kind, sid, tuple(encoded))
        return self._limits(kind, sid, reply)

    def _action_part(self, action: Any, thresholds: Any) -> str:
        """set_limits.lua's ARGV[5] for ``action`` and ``thresholds``."""
        if action is UNSET:
            if thresholds is not None:
                raise InvalidArgumentError("thresholds are set with an action")
            return LIMIT_KEEP
        if action is None:
            if thresholds is not None:
                raise InvalidArgumentError("thresholds are set with an action")
            return LIMIT_DEFAULT
        part = encode_action(action, thresholds)
        if not self.config.cap_actions:
            raise InvalidArgumentError(
                "cap actions are off in this deployment: set cap_actions=true "
                "(SPENDGATE_CAP_ACTIONS) in every process"
            )
        return part

    async def clear_limits(
        self, scope: Scope, scope_id: str | None = None, *, model: str | None = None
    ) -> Limits:
        """Drop an entity's overrides (its action too): it follows the
        configured defaults again.
        With ``model``: drop that model's caps in the scope (it has none then)."""
        kind, sid = self._scope_id(scope, scope_id)
        if model is not None:
            return await self._set_model_limits(kind, sid, model, None, None)
        reply = await self._set_override(
            kind, sid, (LIMIT_DEFAULT,) * (len(OVERRIDE_WINDOWS) + 1)
        )
        return self._limits(kind, sid, reply)

    async def _set_model_limits(
        self, scope: Scope, scope_id: str, model: object, daily: Any, monthly: Any
    ) -> Limits:
        """A model's caps in one scope, through set_limits.lua on the
        model's key (its weekly, per-minute and action parts never set, so it holds
        ``"<daily>|<monthly>"``; no cap is an empty part, and none at all
        deletes the key)."""
        name = self._model_name(model)
        encoded = [
            LIMIT_KEEP
            if value is UNSET
            else LIMIT_DEFAULT
            if value is None
            else str(limit_micros(value))
            for value in (daily, monthly)
        ]
        reply = await self._store.run(
            "set_limits",
            (self._capped_keys(scope, scope_id).model_limits(scope, scope_id, name),),
            (*encoded, LIMIT_KEEP, LIMIT_KEEP, LIMIT_KEEP),
        )
        daily_cap, monthly_cap = (None if v is None else int(v) for v in reply[:2])
        return Limits(
            scope=scope,
            scope_id=scope_id or None,
            daily=None if daily_cap is None else from_micros(daily_cap),
            monthly=None if monthly_cap is None else from_micros(monthly_cap),
            overridden=frozenset(
                w
                for w, v in (("daily", daily_cap), ("monthly", monthly_cap))
                if v is not None
            ),
            model=name,
        )

    def _model_name(self, model: object) -> str:
        """A model a per-model cap or usage is asked for: needs ``model_caps``."""
        if not self.config.model_caps:
            raise InvalidArgumentError(
                "per-model caps are off in this deployment: set model_caps=true "
                "(SPENDGATE_MODEL_CAPS) in every process"
            )
        name = check_capped_model(model)
        assert name is not None
        return name

    def _limits(self, scope: Scope, scope_id: str, reply: list[Any]) -> Limits:
        effective: dict[str, Decimal | None] = {}
        overridden = set()
        windows, part = reply[: len(OVERRIDE_WINDOWS)], reply[len(OVERRIDE_WINDOWS)]
        action, thresholds = decode_action(None if part is None else text(part))
        for window, value in zip(OVERRIDE_WINDOWS, windows, strict=True):
            if value is not None:
                overridden.add(window)
            default = self._defaults[_DEFAULTS_AT[scope, window]]
            micros = int(value if value is not None else default)
            effective[window] = None if micros < 0 else from_micros(micros)
        if not self.config.weekly_enabled:
            effective["weekly"] = None  # (no week is counted: no cap applies)
        if not self.config.per_minute_enabled:
            effective["per_minute"] = None
        return Limits(
            scope=scope,
            scope_id=scope_id or None,
            daily=effective["daily"],
            monthly=effective["monthly"],
            overridden=frozenset(overridden),
            weekly=effective["weekly"],
            per_minute=effective["per_minute"],
            action=action,
            thresholds=thresholds,
        )

    async def get_usage(
        self, user_id: Any, project_id: str | None = None, *, model: str | None = None
    ) -> dict[str, ScopeUsage]:
        """Spent, held, caps, what remains and the balance, per scope.

        :param model: also report that model's spend and caps in each scope
            (``ScopeUsage.model``, a :class:`ModelUsage`); needs ``model_caps``
        :return: ``{"user": ..., "global": ...}``, plus ``"project"`` when a
            project id is given
        """
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        name = None if model is None else self._model_name(model)
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        args: tuple[Any, ...] = (now_ms, w.day, w.month, user_id, project or "")
        if name is not None:
            args += (name,)
        own = self.keys.of(user_id)
        reply = await self._store.run("usage", (own.balance(user_id),), args)
        scopes: list[tuple[str, str | None]] = [("user", user_id)]
        if project is not None:
            scopes.append(("project", project))
        scopes.append(("global", None))
        usage = {}
        # (with cap actions, each scope's action part comes thirteenth)
        width = 13 if self.config.cap_actions else 12
        if own is not self.keys:  # sharded: every bucket spends for the others
            shape = (len(scopes), width, name is not None)
            reply = await with_other_buckets(
                self._store, self.keys, own, (user_id, args, reply), shape
            )
        models = reply[width * len(scopes) :]
        for i, (scope, scope_id) in enumerate(scopes):
            raw = reply[i * width : i * width + 12]
            # (the balance: "<balance>|<granted>|<next expiry>" for a user
            # holding grants, read apart)
            values = [0 if n == 1 else int(v or 0) for n, v in enumerate(raw)]
            balance = None
            if scope == "user":  # shown whether enforced or not: 0 when none
                balance = from_micros(int(text(raw[1] or b"0").split("|", 1)[0]))
            one = self._scope_usage(scope, scope_id, values, balance, w)
            if width == 13 and reply[i * width + 12]:
                action, thresholds = decode_action(text(reply[i * width + 12]))
                one = replace(one, action=action, thresholds=thresholds)
            if name is not None:
                one = replace(
                    one, model=_model_usage(name, models[i * 5 : i * 5 + 5], w)
                )
            usage[scope] = one
        return usage

    def _scope_usage(
        self,
        scope: str,
        scope_id: str | None,
        values: list[int],
        balance: Decimal | None,
        w: Windows,
    ) -> ScopeUsage:
        """One scope's usage from its twelve values of usage.lua's reply."""
        held, _, dl, ml, ds, ms, wl, ws, pl, ps, clears_ms, kill_ms = values
        weekly = minute = None
        if self.config.weekly_enabled:
            weekly = _window_usage(ws, held, wl, from_ms(w.week_end_ms))
        if pl >= 0:
            minute = _window_usage(ps, 0, pl, from_ms(clears_ms or self._now_ms()))
        return ScopeUsage(
            scope=scope,
            scope_id=scope_id,
            daily=_window_usage(ds, held, dl, from_ms(w.day_end_ms)),
            monthly=_window_usage(ms, held, ml, from_ms(w.month_end_ms)),
            held=from_micros(held),
            balance=balance,
            weekly=weekly,
            minute=minute,
            kill_switch_until=from_ms(kill_ms) if kill_ms else None,
        )


def _model_usage(model: str, raw: list[Any], w: Windows) -> ModelUsage:
    """One scope's usage of a model from its five values of usage.lua's
    reply (model_usage in _models.lua): caps, spent today and this month,
    held."""
    daily, monthly, day_spent, month_spent, held = (int(v) for v in raw)
    return ModelUsage(
        model=model,
        daily=_window_usage(day_spent, held, daily, from_ms(w.day_end_ms)),
        monthly=_window_usage(month_spent, held, monthly, from_ms(w.month_end_ms)),
        held=from_micros(held),
    )


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
