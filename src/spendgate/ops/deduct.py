"""``deduct``: bursar's one-call charge, in one script.

The usage is priced on the client (the active price book, else the model
prices of :mod:`spendgate.pricing`), then ``lua/deduct.lua`` checks the caps
and the balance above its floor and charges, or refuses and changes nothing.
The script also checks that the book priced with is still the active one;
when it is not, the usage is priced again with the new one and the call
retried, so a charge is priced by exactly one version, the one in force.

Usage is priced for the user's plan (its ``rate_overrides`` first) as the
manager last knew it; when plans exist, the script checks that plan against
the user's in Redis the same way, and the call is priced again for the real
one when they differ: a charge is priced by exactly one plan, the user's.
When no plan exists (as of the active book's last read, at most a second
old) nothing about plans is read or sent.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.core.ids import (
    check_id,
    check_model,
    check_optional_id,
    user_id_of,
)
from spendgate.core.money import charge_micros, from_micros
from spendgate.core.protocol import Reply
from spendgate.errors import (
    BudgetUnavailableError,
    IdempotencyConflictError,
    InsufficientCreditsError,
    InvalidArgumentError,
    StorageError,
)
from spendgate.models import DeductResult
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.cap_actions import cap_warnings, split_warned
from spendgate.ops.deduct_metadata import (
    arguments_metadata,
    ledger_metadata,
    metadata_of,
    pricing_of,
)
from spendgate.ops.deduct_pricing import (
    PRICE_ATTEMPTS,
    DeductPricing,
    FixedJob,
    with_model,
)
from spendgate.ops.facts import Facts
from spendgate.ops.leases import Leases
from spendgate.ops.plans import allowance_arg
from spendgate.pricing.usage import CostBreakdown, UsageMetrics

if TYPE_CHECKING:
    pass

_ZERO = Decimal(0)


class Deductions(DeductPricing, Leases, Facts):
    """``deduct`` and ``deduct_fixed``."""

    # With a team, deduct hands over to its team variant
    # (spendgate.ops.team_charges.TeamCharges, in the manager).
    _team_deduct: Callable[..., Awaitable[DeductResult]]

    async def deduct(
        self,
        user_id: Any,
        usage: UsageMetrics | Any,
        project_id: str | None = None,
        team_id: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        spool_when_unavailable: bool = False,
        model: str | None = None,
    ) -> DeductResult:
        """Price ``usage`` and charge it in one step, or refuse.

        :param usage: a :class:`UsageMetrics` (priced by the active price
            book, else by the model prices) or an amount
        :param team_id: charge that team's shared pool instead of the user's
            balance (:mod:`spendgate.ops.team_charges`): the user must be a
            member; the member's caps on the team hold as well as the
            user's own, and the pool never goes below 0
            (``InsufficientCreditsError`` with ``scope="team"``)
        :param spool_when_unavailable: when Redis does not answer, record the
            charge as a fact (spooled, replayed later, never refused) instead
            of failing closed: a charge without admission, for work that has
            already happened
        :param model: the model of a charge given as an amount (a
            :class:`UsageMetrics` names its own: a different one is
            refused); its per-model caps are checked in the same script
            (with ``model_caps``) and the ledger row carries it
        :raise InsufficientCreditsError: the balance above its floor (the
            book's ``min_balance``, else the configured one) cannot cover it
        :raise BudgetExceededError: a cap would be passed
        :raise BudgetUnavailableError: Redis did not answer (nothing charged)
        :raise IdempotencyConflictError: a key reused with other arguments
        :raise NotATeamMemberError: with ``team_id``, the user is not a member
        """
        if team_id is not None:
            return await self._team_deduct(
                user_id,
                usage,
                project_id,
                team_id,
                idempotency_key,
                metadata,
                spool_when_unavailable,
                model,
            )
        user = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        key = ""
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
        extra = metadata_of(metadata)
        model = self._deduct_model(model, usage)
        for _ in range(PRICE_ATTEMPTS):
            try:
                priced = with_model(await self._price(usage, user), model)
                result = await self._deduct_once(
                    user, project, key, extra, usage, *priced
                )
            except BudgetUnavailableError:
                if not spool_when_unavailable:
                    raise
                offline = with_model(self._price_offline(usage, user), model)
                return await self._spool_deduct(
                    user, project, key, extra, usage, *offline
                )
            if result is not None:
                return result
            # (STALE_PRICE: priced again with the new book, or for the plan)
        raise StorageError(
            "the active price book or the user's plan kept changing during a deduct"
        )

    def _deduct_model(self, model: object, usage: Any) -> str | None:
        """The model of a charge given as an amount, checked (for its caps
        with ``model_caps``); a :class:`UsageMetrics` names its own, checked
        the same way (the ledger row and the model's counters carry it).

        :raise InvalidIdError: a blank, overlong or unencodable model
        :raise InvalidArgumentError: it differs from the usage's model
        """
        checked = self._capped_model if self._model_caps else check_model
        own = usage.model if isinstance(usage, UsageMetrics) else None
        if model is None:
            if own is not None:
                checked(own)
            return None
        name = checked(model)
        if own is not None and own != name:
            raise InvalidArgumentError(
                f"model {name!r} differs from the usage's model {own!r}"
            )
        return name

    async def deduct_fixed(
        self,
        user_id: Any,
        job: str,
        project_id: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        team_id: str | None = None,
    ) -> DeductResult:
        """Charge the active price book's fixed price of ``job`` (its
        ``fixed`` section), as :meth:`deduct` does.

        :param team_id: charge that team's shared pool, as :meth:`deduct`
            does with it (the member's caps and the user's own hold; a key
            reused for another team, or for none, is a conflict)
        :raise InvalidArgumentError: no price book is active, or it prices
            no such job
        :raise NotATeamMemberError: with ``team_id``, the user is not a member
        """
        return await self.deduct(
            user_id, FixedJob(job), project_id, team_id, idempotency_key, metadata
        )

    async def _deduct_once(
        self,
        user: str,
        project: str | None,
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
        """One try; ``None`` when the book priced with is no longer active,
        or the plan priced for is not the user's (the caches are updated)."""
        if amount == 0:  # bursar's short-circuit: nothing to charge or check
            return DeductResult(
                "", user, Decimal(0), Decimal(0), None, breakdown, version
            )
        now_ms = self._now_ms()
        if check:  # "=" and the user's plan as last read: its allowance now
            check = "=" + allowance_arg(
                check[1:],
                self._plans().view(self._active_engine()),
                now_ms,
                self._retention_ms - now_ms,
            )
        entry_id = self.keys.id_for(new_id(now_ms), user)
        meta = ledger_metadata(extra, usage, breakdown, version, self._max_meta, plan)
        digest = self._deduct_digest(user, project, extra, usage, model) if key else ""
        args = self._fact_head(now_ms, amount) + (
            digest,
            entry_id,
            user,
            project or "",
            model or "",
            meta,
            key,
            "" if version is None else version,
            "" if floor is None else floor,
            check,
        )
        # no key: the charge's refund record stands in (see deduct.lua)
        keys = self.keys.of(user)
        ikey = keys.caller_idempotency(key) if key else keys.charge(entry_id)
        reply = await self._store.run("deduct", (ikey,), args)
        code = reply[0]
        if code == Reply.ESCROW:  # (sharded: its bucket borrows first)
            reply = await self._escrowed("deduct", (ikey,), args, reply)
            code = reply[0]
        if code == Reply.STALE_PRICE:
            self._stale(user, reply)
            return None
        if code == Reply.CONFLICT:
            raise IdempotencyConflictError(key)
        if code == Reply.REFUSED:
            raise balance_refusal(
                self._refusal(reply, user, project, amount, self._windows_at(now_ms))
            )
        if code == Reply.REPLAYED:  # (the first call's warnings, as a charge's)
            payload, crossed = split_warned(text(reply[1]))
            reply = [code, payload, crossed]
        # "entry|now_ms|balance|amount|version|allowance used" (older
        # idempotency records end before the allowance)
        fields = text(reply[1]).split("|")
        if len(fields) == 4:  # this deduct's charge, spooled as a fact
            result = _spooled_replay(user, *fields)
        else:
            entry, _, balance, charged, first_version, *rest = fields
            used = rest[0] if rest else ""
            # Positional, in field order (entry_id, user_id, amount,
            # allowance_used, balance_after, breakdown, price_version, replayed).
            result = DeductResult(
                entry,
                user,
                from_micros(int(charged)),
                from_micros(int(used)) if used else _ZERO,
                from_micros(int(balance)),
                breakdown if code == Reply.OK else None,
                int(first_version) if first_version else None,
                code == Reply.REPLAYED,
            )
        if len(reply) > 2:  # (only with cap actions)
            result.warnings = cap_warnings(reply[2], user, project)
        return result

    def _deduct_digest(
        self,
        user: str,
        project: str | None,
        extra: dict[str, Any],
        usage: Any,
        model: str | None,
        team: str | None = None,
    ) -> str:
        """The idempotency fingerprint of a deduct with a key: the caller's
        arguments (not the price, nor the book or plan it came from, so a
        retry after an activation replays the first charge), and the team
        of a team deduct."""
        called = arguments_metadata(extra, self._max_meta)
        used = usage_text(usage)
        if team is None:
            digest = fingerprint("deduct", user, project, used, called)
        else:
            digest = fingerprint("team_deduct", user, project, used, called, team)
        return with_amount_model(digest, usage, model)

    def _stale(self, user: str, reply: Any) -> None:
        """What a STALE_PRICE answer changed: the user's plan (the charge is
        priced again for it), or the active book (priced again with it)."""
        if len(reply) > 2:
            self._plans().remember(user, text(reply[2]))
        else:
            self._forget_active()

    async def _spool_deduct(
        self,
        user: str,
        project: str | None,
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
        # Keyed with the deduct's own fingerprint: a retry of this deduct
        # replays the fact, and the fact's replay a charge the retry made.
        record = await self._record(
            user,
            from_micros(amount),
            project,
            model,
            key or None,
            {**extra, "pricing": pricing_of(breakdown, version, plan)},
            self._deduct_digest(user, project, extra, usage, model) if key else None,
        )
        return DeductResult(
            entry_id=record.entry_id,
            user_id=user,
            amount=record.amount,
            allowance_used=record.allowance_used,
            balance_after=None,
            breakdown=breakdown,
            price_version=version,
            replayed=record.replayed,
            spooled=record.spooled,
        )


def _spooled_replay(
    user: str, entry: str, _now_ms: str, amount: str, used: str
) -> DeductResult:
    """The replay of a deduct whose charge was spooled as a fact
    (``"entry|now_ms|amount|allowance used"``, lua/record.lua's): what it
    charged; no balance (the fact read none) nor price version."""
    return DeductResult(
        entry,
        user,
        from_micros(int(amount)),
        from_micros(int(used)) if used else _ZERO,
        None,
        None,
        None,
        True,
    )


def usage_text(usage: Any) -> str:
    """What a deduct's idempotency fingerprint names of its usage: a
    :class:`UsageMetrics` or fixed job by its repr, an amount by the amount
    it charges (as record_spend's fingerprint does), so that ``1``, ``"1"``
    and ``Decimal("1.0")`` are the same argument and a retry replays. (The
    repr of that ``Decimal``: an amount passed as a Decimal in its shortest
    form keeps the fingerprint it had.)"""
    if isinstance(usage, UsageMetrics | FixedJob):
        return repr(usage)
    return repr(from_micros(charge_micros(usage)))


def with_amount_model(digest: str, usage: Any, model: str | None) -> str:
    """A deduct's idempotency fingerprint with the model an amount is
    charged at, so that a key reused for another model is a conflict, not a
    replay (a usage names its model in its repr; an amount without a model
    keeps the digest it always had)."""
    if model is None or isinstance(usage, UsageMetrics | FixedJob):
        return digest
    return fingerprint(digest, model)


def balance_refusal(error: Any) -> Any:
    """A balance refusal is an :class:`InsufficientCreditsError`."""
    if error.window != "balance":
        return error
    return InsufficientCreditsError(
        scope=error.scope,
        scope_id=error.scope_id,
        window=error.window,
        limit=error.limit,
        spent=error.spent,
        requested=error.requested,
        resets_at=error.resets_at,
        held=error.held,
    )
