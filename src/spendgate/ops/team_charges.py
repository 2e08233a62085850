"""Charges on a team's pool: ``team_id=`` on ``record_spend`` and
``deduct`` (its holds, their settle and release:
:mod:`spendgate.ops.team_leases`).

Each is its own script (``lua/team_*.lua``), so the calls without a team run
the scripts they always ran: a deployment that never charges a team pays
nothing for teams. In one round trip each checks the membership, the user's
own caps (and the project's and global caps; not the user's balance: the
pool pays), the member's caps on the team and the pool (a fact only the
membership), then charges; the ledger entry names the team.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from spendgate.core.ids import (
    check_id,
    check_model,
    check_optional_id,
    encode_metadata,
    user_id_of,
)
from spendgate.core.money import charge_micros, from_micros
from spendgate.core.protocol import Reply
from spendgate.errors import (
    BudgetUnavailableError,
    IdempotencyConflictError,
    StorageError,
)
from spendgate.models import DeductResult, SpendRecord
from spendgate.ops.base import fingerprint, text
from spendgate.ops.cap_actions import cap_warnings, split_warned
from spendgate.ops.deduct import Deductions, balance_refusal
from spendgate.ops.deduct_metadata import (
    ledger_metadata,
    metadata_of,
    pricing_of,
)
from spendgate.ops.deduct_pricing import PRICE_ATTEMPTS, with_model
from spendgate.ops.team_leases import TeamLeases
from spendgate.ops.teams import _raise_for_team, team_scoped_id
from spendgate.pricing.usage import CostBreakdown
from spendgate.teams import split_entry

_CONFLICT, _REPLAYED = int(Reply.CONFLICT), int(Reply.REPLAYED)
_ZERO = Decimal(0)


class TeamCharges(Deductions, TeamLeases):
    """The team variants the public calls hand over to when given a team."""

    async def _team_record(
        self,
        user_id: Any,
        cost: Any,
        project_id: str | None,
        model: str | None,
        idempotency_key: str | None,
        metadata: Mapping[str, Any] | None,
        team_id: str,
        called: str | None = None,
    ) -> SpendRecord:
        """``record_spend`` on the team's pool: a fact (spooled while Redis
        is away; the spool's replay records it whoever is a member then).
        ``called``: the fingerprint of the team deduct this fact stands for
        (as ``Facts._record``'s)."""
        user = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        team = self._team_id(team_id)
        amount = charge_micros(cost)
        model_name = None if model is None else check_model(model)
        meta = "" if metadata is None else encode_metadata(metadata, self._max_meta)
        now_ms = self._now_ms()
        entry_id = team_scoped_id(now_ms, team)
        key, ikey = self._idempotency(idempotency_key, entry_id)
        digest = ""
        if key:
            digest = called or fingerprint(
                "team_spend", user, project, amount, model_name, meta, team
            )
        head = self._fact_head(now_ms, amount)
        args = head + (
            digest,
            entry_id,
            user,
            project or "",
            model_name or "",
            meta,
            key,
            team,
            "1",
        )
        keys = (ikey, *self.keys.team_keys(team, head[1], head[3]))
        info = {"kind": "spend", "entry": entry_id, "user": user, "team": team}
        reply = await self._store.run("team_record", keys, args, spool_info=info.copy)
        replayed, occurred_ms = False, now_ms
        if reply is not None:
            code = reply[0]
            if code == _CONFLICT:
                raise IdempotencyConflictError(key)
            _raise_for_team(code, team, user)
            if code == _REPLAYED:  # (the first call's warnings, as a charge's)
                replayed = True
                entry_id, rest = split_entry(text(reply[1]), team)
                rest, crossed = split_warned(rest)
                reply = [code, rest, crossed]
                # "now_ms[|amount]" (older records: no amount), or a team
                # deduct's payload when this fact is one's, spooled
                occurred_ms = int(rest.partition("|")[0])
        record = SpendRecord(
            entry_id,
            "spend",
            user,
            project,
            amount,
            model_name,
            occurred_ms,
            replayed,
            False,
            reply is None,
            team_id=team,
        )
        if reply is not None and len(reply) > 2:  # (only with cap actions)
            record.warnings = cap_warnings(reply[2], user, project)
        return record

    async def _team_deduct(
        self,
        user_id: Any,
        usage: Any,
        project_id: str | None,
        team_id: str,
        idempotency_key: str | None,
        metadata: Mapping[str, Any] | None,
        spool_when_unavailable: bool,
        model: str | None = None,
    ) -> DeductResult:
        """``deduct`` on the team's pool (priced, and ``model`` checked, as
        ``deduct`` does: with ``model_caps`` the model's caps admit it too)."""
        user = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        team = self._team_id(team_id)
        key = ""
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
        extra = metadata_of(metadata)
        model = self._deduct_model(model, usage)
        for _ in range(PRICE_ATTEMPTS):
            try:
                priced = with_model(await self._price(usage, user), model)
                result = await self._team_deduct_once(
                    user, project, team, key, extra, usage, *priced
                )
            except BudgetUnavailableError:
                if not spool_when_unavailable:
                    raise
                offline = with_model(self._price_offline(usage, user), model)
                return await self._team_spool_deduct(
                    user, project, team, key, extra, usage, *offline
                )
            if result is not None:
                return result
        raise StorageError(
            "the active price book or the user's plan kept changing during a deduct"
        )

    async def _team_spool_deduct(
        self,
        user: str,
        project: str | None,
        team: str,
        key: str,
        extra: dict[str, Any],
        usage: Any,
        amount: int,
        breakdown: CostBreakdown | None,
        version: int | None,
        model: str | None,
        floor: int | None,
        plan: str | None,
        check: str,
    ) -> DeductResult:
        """A team deduct Redis did not answer, recorded as a team fact,
        keyed with the deduct's own fingerprint (as ``_spool_deduct``)."""
        meta = {**extra, "pricing": pricing_of(breakdown, version, plan)}
        record = await self._team_record(
            user,
            from_micros(amount),
            project,
            model,
            key or None,
            meta,
            team,
            self._deduct_digest(user, project, extra, usage, model, team)
            if key
            else None,
        )
        return DeductResult(
            record.entry_id,
            user,
            record.amount,
            _ZERO,
            None,
            breakdown,
            version,
            record.replayed,
            record.spooled,
            team_id=team,
        )

    async def _team_deduct_once(
        self,
        user: str,
        project: str | None,
        team: str,
        key: str,
        extra: dict[str, Any],
        usage: Any,
        amount: int,
        breakdown: CostBreakdown | None,
        version: int | None,
        model: str | None,
        floor: int | None,
        plan: str | None,
        check: str,
    ) -> DeductResult | None:
        """One try (``floor``, a user balance's, plays no part: the pool's
        is 0); ``None`` when priced with a stale book or plan."""
        if amount == 0:  # bursar's short-circuit: nothing to charge or check
            return DeductResult(
                "", user, _ZERO, _ZERO, None, breakdown, version, team_id=team
            )
        now_ms = self._now_ms()
        entry_id = team_scoped_id(now_ms, team)
        meta = ledger_metadata(extra, usage, breakdown, version, self._max_meta, plan)
        digest = ""
        if key:
            digest = self._deduct_digest(user, project, extra, usage, model, team)
        head = self._fact_head(now_ms, amount)
        args = head + (
            digest,
            entry_id,
            user,
            project or "",
            model or "",
            meta,
            key,
            "" if version is None else version,
            check,
            team,
        )
        ikey = self.keys.caller_idempotency(key) if key else self.keys.charge(entry_id)
        keys = (ikey, *self.keys.team_keys(team, head[1], head[3]))
        reply = await self._store.run("team_deduct", keys, args)
        code = reply[0]
        if code == Reply.STALE_PRICE:
            self._stale(user, reply)
            return None
        if code == Reply.CONFLICT:
            raise IdempotencyConflictError(key)
        _raise_for_team(code, team, user)
        if code == Reply.REFUSED:
            w = self._windows_at(now_ms)
            raise balance_refusal(
                self._team_refusal(reply, user, project, team, amount, w)
            )
        entry, rest = split_entry(text(reply[1]), team)
        if code == Reply.REPLAYED:  # (the first call's warnings, as a charge's)
            rest, crossed = split_warned(rest)
            reply = [code, rest, crossed]
        fields = rest.split("|")
        if len(fields) == 2:  # this deduct's charge, spooled as a team fact
            fields = [fields[0], "", fields[1], ""]
        _, balance, charged, first_version = fields
        result = DeductResult(
            entry,
            user,
            from_micros(int(charged)),
            _ZERO,
            from_micros(int(balance)) if balance else None,
            breakdown if code == Reply.OK else None,
            int(first_version) if first_version else None,
            code == Reply.REPLAYED,
            team_id=team,
        )
        if len(reply) > 2:  # (only with cap actions)
            result.warnings = cap_warnings(reply[2], user, project)
        return result
