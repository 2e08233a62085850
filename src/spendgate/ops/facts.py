"""Facts: money already spent (or paid in). Never refused for a limit, never
lost: a fact Redis does not take is spooled and replayed exactly once.

Every fact carries an idempotency key, the caller's or one generated from
its entry id, so a replay (the caller's or the spool's) counts once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from spendgate.core.ids import (
    check_id,
    check_model,
    check_optional_id,
    encode_metadata,
    user_id_of,
    user_of_call,
)
from spendgate.core.money import charge_micros
from spendgate.core.protocol import Reply
from spendgate.errors import IdempotencyConflictError
from spendgate.models import SpendRecord
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.cap_actions import cap_warnings, split_warned
from spendgate.ops.escrow_admission import Escrowing

_REPLAYED, _CONFLICT = int(Reply.REPLAYED), int(Reply.CONFLICT)
_STALE = int(Reply.STALE_PRICE)


class Facts(Escrowing):
    """``record_spend``, and the idempotency every fact shares (``add_credits``
    and ``refund`` are :mod:`spendgate.ops.credits`' and
    :mod:`spendgate.ops.refunds`')."""

    # With a team, record_spend hands over to its team variant
    # (spendgate.ops.team_charges.TeamCharges, in the manager).
    _team_record: Callable[..., Awaitable[SpendRecord]]

    def _idempotency(
        self, idempotency_key: str | None, entry_id: str
    ) -> tuple[str, str]:
        """The caller's key (checked) and its record's Redis key; a fact
        without one is keyed by its entry id (key ``""``)."""
        keys = self.keys.of_id(entry_id)  # (its bucket: the call's)
        if idempotency_key is None:
            return "", keys.generated_idempotency(entry_id)
        key = check_id("idempotency_key", idempotency_key, self._max_id)
        return key, keys.caller_idempotency(key)

    async def record_spend(
        self,
        user_id: Any = None,
        cost: Any = None,
        project_id: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        team_id: str | None = None,
        *,
        user_context: Any = None,
    ) -> SpendRecord:
        """Record money already spent (the LLM call happened): a fact.

        Never refused for being over a limit; only invalid input is rejected.
        The argument order is coreason-budget's; its 0.4's keyword
        ``user_context`` may name the user instead of ``user_id``.

        :param team_id: charge that team's shared pool instead of the user's
            balance (:mod:`spendgate.ops.team_charges`)
        :raise IdempotencyConflictError: a key reused with other arguments
        :raise NotATeamMemberError: with ``team_id``, the user is not a member
        :raise InvalidArgumentError: both ``user_id`` and ``user_context``
        """
        if user_context is not None:
            user_id = user_of_call(user_id, user_context)
        if team_id is not None:
            return await self._team_record(
                user_id, cost, project_id, model, idempotency_key, metadata, team_id
            )
        return await self._record(
            user_id, cost, project_id, model, idempotency_key, metadata, None
        )

    async def _record(
        self,
        user_id: Any,
        cost: Any,
        project_id: str | None,
        model: str | None,
        idempotency_key: str | None,
        metadata: Mapping[str, Any] | None,
        called: str | None,
    ) -> SpendRecord:
        """``record_spend`` without a team. ``called``: the fingerprint of
        the call this fact stands for, when it is not ``record_spend`` (a
        ``deduct`` spooled while Redis was away: its retry with the same key
        then replays the fact, and the fact's replay a charge the retry
        made), else ``None``."""
        user_id = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        amount = charge_micros(cost)
        # (None is checked here: most facts carry neither, and a call is not free)
        model_name = None if model is None else check_model(model)
        meta = "" if metadata is None else encode_metadata(metadata, self._max_meta)
        now_ms = self._now_ms()
        entry_id = self.keys.id_for(new_id(now_ms), user_id)
        key, ikey = self._idempotency(idempotency_key, entry_id)
        # A generated key is this call's own: only a replay of this very call
        # (the spool's) can meet it, so there is nothing to compare.
        digest = ""
        if key:
            digest = called or fingerprint(
                "spend", user_id, project, amount, model_name, meta
            )
        args = self._fact_head(now_ms, amount) + (
            digest,
            entry_id,
            user_id,
            project or "",
            model_name or "",
            meta,
            key,
        )
        info = {"kind": "spend", "entry": entry_id, "user": user_id, "amount": amount}
        # The plan's allowance: "=" (no plan expected) unless the user is
        # known to have one (see lua/_allowance.lua).
        plan = self._plan_fast(user_id)
        if plan is None:
            plan = await self._plan_arg(user_id, now_ms)
        reply = await self._store.run(
            "record", (ikey,), args + (plan,), spool_info=info.copy
        )
        replayed = False
        occurred_ms = now_ms
        allowance = 0
        if reply is not None:
            code = reply[0]
            if code == _STALE:
                reply = await self._replan(
                    "record",
                    (ikey,),
                    args,
                    user_id,
                    now_ms,
                    reply,
                    spool_info=info.copy,
                )
                code = -1 if reply is None else reply[0]
            if code == _CONFLICT:
                raise IdempotencyConflictError(key)
            if code == _REPLAYED:  # the first call's entry, not this one's
                replayed = True
                # "entry|now_ms[|amount]|allowance used" (older records end
                # early: no amount, or nothing after now_ms), then the first
                # call's warnings, read below as a charge's
                payload, crossed = split_warned(text(reply[1]))
                reply = [code, payload, crossed]
                entry_id, first_ms, *rest = payload.split("|")
                occurred_ms = int(first_ms)
                allowance = int(rest[-1]) if rest and rest[-1] else 0
            elif reply is not None:
                payload = text(reply[1])  # "entry|now_ms|amount|allowance used"
                if payload[-1] != "|":
                    allowance = int(payload.rsplit("|", 1)[1])
        # Positional, in field order (entry_id, kind, user_id, project_id,
        # amount_micros, model, occurred_ms, replayed, late, spooled):
        # keywords cost the dataclass twice the time. None: spooled, replayed
        # exactly once when Redis answers.
        record = SpendRecord(
            entry_id,
            "spend",
            user_id,
            project,
            amount,
            model_name,
            occurred_ms,
            replayed,
            False,
            reply is None,
        )
        if allowance:
            record.allowance_used_micros = allowance
        if reply is not None and len(reply) > 2:  # (only with cap actions)
            record.warnings = cap_warnings(reply[2], user_id, project)
        if reply is not None and len(reply) > 3:  # (sharded: past its allowance)
            await self._counted(self.keys.of(user_id), reply[3])
        return record
