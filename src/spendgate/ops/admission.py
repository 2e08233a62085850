"""Admission: may this caller spend this much now? One script, one round trip.

A refusal is decoded here, in one place, for every operation that admits
(``check_availability``, ``reserve``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from spendgate.core.ids import (
    check_capped_model,
    check_model,
    check_optional_id,
    user_id_of,
    user_of_call,
)
from spendgate.core.money import charge_micros, from_micros
from spendgate.core.protocol import WINDOW_NAMES, Reply
from spendgate.core.windows import Windows, from_ms
from spendgate.errors import BudgetExceededError, Scope
from spendgate.ops.base import text
from spendgate.ops.escrow_admission import Escrowing

_OK = int(Reply.OK)


class Admission(Escrowing):
    """``check_availability`` and ``remaining``; the refusal they share with
    ``reserve``."""

    async def check_availability(
        self,
        user_id: Any = None,
        project_id: str | None = None,
        estimated_cost: Any = 0,
        *,
        model: str | None = None,
        user_context: Any = None,
    ) -> bool:
        """May ``user`` spend ``estimated_cost`` now? Changes nothing (but a
        scope found at its per-minute cap trips its kill switch, when one is
        configured: a check-then-record loop is stopped by its checks).

        The argument order is coreason-budget's. ``user_id`` is a user id or any
        object with a ``user_id`` attribute; coreason-budget 0.4's keyword
        ``user_context`` may name it instead.

        :param model: the model the call is for: its per-model caps (of the
            user, the project and the global scope) are checked too, in the
            same script (with ``model_caps``; without, it is ignored)
        :return: ``True`` when admitted
        :raise BudgetExceededError: when a cap or the balance would be passed
        :raise BudgetUnavailableError: when the store did not answer in time
            (unless ``fail_open``)
        :raise InvalidArgumentError: both ``user_id`` and ``user_context``
        """
        if user_context is not None:
            user_id = user_of_call(user_id, user_context)
        await self.remaining(user_id, project_id, estimated_cost, model=model)
        return True

    async def remaining(
        self,
        user_id: Any,
        project_id: str | None = None,
        estimated_cost: Any = 0,
        *,
        model: str | None = None,
    ) -> Decimal | None:
        """Like :meth:`check_availability`, returning what would be left: the
        smallest ``limit - spent - held`` over every capped window and balance
        before this request (the model's caps included, with ``model``), or
        ``None`` when nothing is capped (or the store was unavailable and
        ``fail_open`` admitted)."""
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        requested = charge_micros(estimated_cost)
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        keys = (self.keys.of(user_id).balance(user_id),)
        args = (now_ms, w.day, w.month, requested, user_id, project or "")
        tail: tuple[Any, ...] = ()
        if self._model_caps:
            tail = (self._capped_model(model),)
        elif model is not None:
            check_model(model)
        # (what is left of the plan's allowance counts as balance)
        plan = self._plan_fast(user_id, self.config.enforce_balance)
        if plan is None:
            plan = await self._plan_arg(user_id, now_ms)
        sent = args + (plan,) + tail
        reply = await self._store.run("check", keys, sent, fail_open=True)
        if reply is not None and reply[0] == Reply.ESCROW:  # (sharded: borrows)
            reply = await self._escrowed("check", keys, sent, reply, fail_open=True)
        if reply is not None and reply[0] == Reply.STALE_PRICE:
            reply = await self._replan(
                "check", keys, args, user_id, now_ms, reply, tail, fail_open=True
            )
        if reply is None:
            return None
        if reply[0] != _OK:
            raise self._refusal(reply, user_id, project, requested, w)
        return None if reply[1] < 0 else from_micros(reply[1])

    def _capped_model(self, model: object) -> str:
        """The model argument of an admitting script with ``model_caps``:
        ``""`` for none."""
        return "" if model is None else check_capped_model(model) or ""

    def _model_tail(self, model: object) -> tuple[str, ...]:
        """The hooked arguments of an admitting script for ``model``: the
        model with ``model_caps`` (``""`` for none), else nothing (a model
        given is still checked)."""
        if self._model_caps:
            return (self._capped_model(model),)
        if model is not None:
            check_model(model)
        return ()

    def _refusal(
        self,
        reply: list[Any],
        user_id: str,
        project_id: str | None,
        requested: int,
        windows: Windows,
    ) -> BudgetExceededError:
        """The error of a ``REFUSED`` reply: ``{REFUSED, scope index, window,
        limit, spent, held}``, scopes counted user, [project,] global; a
        per-minute refusal adds when the scope frees up (ms), a per-model
        one ``0`` and the model."""
        index, window_code, limit, spent, held = reply[1:6]
        scope: Scope
        if index == 1:
            scope, scope_id = "user", user_id
        elif index == 2 and project_id is not None:
            scope, scope_id = "project", project_id
        else:
            scope, scope_id = "global", None
        window = WINDOW_NAMES[window_code]
        resets_at = None
        if window == "daily":
            resets_at = from_ms(windows.day_end_ms)
        elif window == "monthly":
            resets_at = from_ms(windows.month_end_ms)
        elif window == "weekly":
            resets_at = from_ms(windows.week_end_ms)
        elif window == "minute":
            resets_at = from_ms(int(reply[6]))
        return BudgetExceededError(
            scope=scope,
            scope_id=scope_id,
            window=window,
            limit=from_micros(limit),
            spent=from_micros(spent),
            requested=from_micros(requested),
            resets_at=resets_at,
            held=from_micros(held),
            model=text(reply[7]) if len(reply) > 7 else None,
        )
