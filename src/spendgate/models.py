"""What the public API returns: plain records with exact ``Decimal`` amounts."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from spendgate.core.money import from_micros
from spendgate.core.windows import from_ms

if TYPE_CHECKING:
    from spendgate.pricing.usage import CostBreakdown


@dataclass(slots=True)
class Lease:
    """A hold on budget, from :meth:`BudgetManager.reserve`.

    Inside ``async with budget.lease(...) as lease``, set ``actual_cost`` (and
    ``model``) before the block ends: it is settled at that cost on exit.
    """

    #: the lease id; settle and release take it (or this object)
    id: str
    user_id: str
    project_id: str | None
    #: the amount held, in micro-units (rounded up; see ``amount``)
    amount_micros: int
    #: when the hold stops counting, in ms since the epoch (see ``expires_at``)
    expires_ms: int
    #: True when an idempotency key replayed an earlier reserve
    replayed: bool = False
    #: set by the caller inside ``budget.lease(...)``: what the call really cost
    actual_cost: Decimal | int | str | float | None = None
    #: set by the caller inside ``budget.lease(...)``: the model used
    model: str | None = None
    metadata: dict[str, Any] | None = field(default=None, repr=False)
    #: the team whose pool the hold is on (``reserve(..., team_id=...)``)
    team_id: str | None = None

    @property
    def amount(self) -> Decimal:
        """The amount held, rounded up to the micro-unit."""
        return from_micros(self.amount_micros)

    @property
    def expires_at(self) -> datetime:
        """When the hold stops counting (UTC)."""
        # Made when asked for, like ``amount``: building these objects costs
        # the hot path more than any other part of the record, and most
        # callers never read them.
        return from_ms(self.expires_ms)


# Not frozen: a frozen dataclass sets each of its fields through
# object.__setattr__, which made building this record a sixth of a fact's
# client-side cost. It is the caller's own copy; nothing reads it back.
@dataclass(slots=True)
class SpendRecord:
    """One fact in the ledger: a spend, a settle or a grant of credits."""

    #: the ledger entry id; a replay returns the same one
    entry_id: str
    #: ``"spend"``, ``"settle"`` or ``"grant"`` (``add_credits``)
    kind: str
    user_id: str
    project_id: str | None
    #: the amount charged or credited, in micro-units (see ``amount``)
    amount_micros: int
    model: str | None
    #: when the fact was recorded, in ms since the epoch (see ``occurred_at``)
    occurred_ms: int
    #: True when an idempotency key (or a second settle) replayed it
    replayed: bool = False
    #: True when a lease was settled after its expiry
    late: bool = False
    #: True when Redis was unreachable and the fact went to the local spool;
    #: it is replayed, exactly once, when Redis answers again
    spooled: bool = False
    lease_id: str | None = None
    #: what the settled lease held, in micro-units (see ``estimate``)
    estimate_micros: int | None = None
    #: the user's balance after a credit (``None`` when spooled)
    balance: Decimal | None = None
    #: the thresholds of ``warn`` caps this charge reached (each one's event
    #: was written with it); a replay answers the first call's (and writes
    #: no event)
    warnings: tuple[CapWarning, ...] = ()
    #: a charge: the part of it a plan's free allowance paid, micro-units
    #: (see ``allowance_used``)
    allowance_used_micros: int = 0
    #: the team whose pool paid (``team_id=``); ``None`` for the user's own
    team_id: str | None = None

    @property
    def amount(self) -> Decimal:
        """The amount charged or credited."""
        return from_micros(self.amount_micros)  # made when asked for, as Lease's

    @property
    def allowance_used(self) -> Decimal:
        """The part of a charge a plan's free allowance paid (0 without a
        plan, or while spooled)."""
        return from_micros(self.allowance_used_micros)

    @property
    def estimate(self) -> Decimal | None:
        """What the settled lease held (``None`` but for a settle)."""
        micros = self.estimate_micros
        return None if micros is None else from_micros(micros)

    @property
    def occurred_at(self) -> datetime:
        """When the fact was recorded (UTC; the first time, for a replay)."""
        return from_ms(self.occurred_ms)


@dataclass(frozen=True, slots=True)
class WindowUsage:
    """Spend in one window (a day, week or month in the window time zone, or
    the sliding minute) of one scope."""

    spent: Decimal
    #: held by open leases (holds count against every calendar window; the
    #: minute counts a hold in ``spent`` when it is taken: 0 here)
    held: Decimal
    #: the cap; ``None`` when there is none
    limit: Decimal | None
    #: ``limit - spent - held`` (at least 0); ``None`` without a cap
    remaining: Decimal | None
    #: when the window rolls over (UTC); for the minute, when what it holds
    #: now has all left it
    resets_at: datetime


@dataclass(frozen=True, slots=True)
class ModelUsage:
    """One model's spend in one scope, under its per-model caps
    (``get_usage(..., model=...)``, with ``model_caps``)."""

    model: str
    #: spent on the model today, held by leases taken for it, its daily cap
    daily: WindowUsage
    monthly: WindowUsage
    #: held by open leases reserved for the model
    held: Decimal


@dataclass(frozen=True, slots=True)
class ScopeUsage:
    """Usage of one scope: ``"user"``, ``"project"`` or ``"global"``."""

    scope: str
    #: the user or project id; ``None`` for global
    scope_id: str | None
    daily: WindowUsage
    monthly: WindowUsage
    held: Decimal
    #: the prepaid balance (user scope: enforced or not, 0 when the user has
    #: none; see also ``get_balance``); ``None`` for the other scopes
    balance: Decimal | None
    #: the ISO week; ``None`` unless weekly counters are kept
    weekly: WindowUsage | None = None
    #: the sliding minute; ``None`` unless a per-minute cap applies
    minute: WindowUsage | None = None
    #: until when the kill switch refuses the scope; ``None`` when it does not
    kill_switch_until: datetime | None = None
    #: the model asked for (``get_usage(..., model=...)``); ``None`` otherwise
    model: ModelUsage | None = None
    #: the scope's cap action (``None``: none, or cap actions are off)
    action: str | None = None
    #: its thresholds, fractions of the daily and monthly caps
    thresholds: tuple[Decimal, ...] = ()


@dataclass(frozen=True, slots=True)
class CapWarning:
    """A threshold of a ``warn`` cap that a charge reached: its event
    (``credits.cap_warning``, or ``credits.cap_reached`` at the cap itself)
    was written by the same script, once in the window."""

    #: ``"user"``, ``"project"`` or ``"global"``
    scope: str
    #: the user or project id (``None`` for the global scope)
    scope_id: str | None
    #: ``"daily"`` or ``"monthly"``
    window: str
    #: the threshold reached, a fraction of the cap (``Decimal("0.8")``; 1 is
    #: the cap itself)
    threshold: Decimal
    #: the cap
    limit: Decimal
    #: spent in the window after the charge
    spent: Decimal

    @property
    def reached_cap(self) -> bool:
        """The cap itself was reached (``credits.cap_reached``)."""
        return self.threshold == 1


@dataclass(frozen=True, slots=True)
class Limits:
    """Per-entity cap overrides in force after :meth:`BudgetManager.set_limits`."""

    scope: str
    scope_id: str | None
    #: the daily override; ``None`` = no cap; absent from ``overridden`` = default
    daily: Decimal | None
    monthly: Decimal | None
    #: which windows are overridden (the others follow the configured default)
    overridden: frozenset[str]
    #: the weekly cap in force (``None``: no cap, or weekly caps are off)
    weekly: Decimal | None = None
    #: the per-minute cap in force (``None``: no cap, or per-minute caps are off)
    per_minute: Decimal | None = None
    #: the model these caps are for (``set_limits(..., model=...)``: they
    #: bound that model's spend alone, and have no default); ``None`` for
    #: the scope's own caps
    model: str | None = None
    #: the cap action (``"deny"``, ``"warn"``, ``"notify"``); ``None``: none
    #: set (refused at the caps, no events)
    action: str | None = None
    #: the action's thresholds, fractions of the daily and monthly caps,
    #: ascending, the cap itself (1) last; empty without an action
    thresholds: tuple[Decimal, ...] = ()


# Not frozen, as SpendRecord: built on the hot path, positionally.
@dataclass(slots=True)
class DeductResult:
    """What :meth:`BudgetManager.deduct` charged."""

    #: the ledger entry id; a replay returns the first call's
    entry_id: str
    user_id: str
    #: the amount charged (the price, rounded up to the micro-unit)
    amount: Decimal
    #: the part of it the plan's free allowance paid (0 without a plan)
    allowance_used: Decimal
    #: the user's balance after the charge (``None`` when spooled)
    balance_after: Decimal | None
    #: the price by dimension (``None`` for a plain amount)
    breakdown: CostBreakdown | None
    #: the price book version that priced it (``None``: no book)
    price_version: int | None
    #: True when an idempotency key replayed it
    replayed: bool = False
    #: True when the store was down and the charge went to the spool
    #: (only with ``spool_when_unavailable=True``)
    spooled: bool = False
    #: the thresholds of ``warn`` caps this charge reached (see
    #: :class:`CapWarning`); a replay answers the first call's
    warnings: tuple[CapWarning, ...] = ()
    #: the team whose pool paid (``team_id=``; ``balance_after`` is then the
    #: pool's); ``None`` for the user's own balance
    team_id: str | None = None


@dataclass(frozen=True, slots=True)
class PriceBookVersion:
    """One published price book version (:meth:`BudgetManager.list_pricing`)."""

    version: int
    label: str | None
    #: when it was published
    created_at: datetime
    #: sha256 of its canonical JSON
    digest: str
    #: the version every instance prices with now
    active: bool
    #: the book itself (bursar's format); ``None`` in a listing
    config: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Grant:
    """Prepaid credits a user holds (:meth:`BudgetManager.add_credits`),
    drawn on by charges in order: lower ``priority`` first, then the earliest
    ``expires_at`` (never-expiring last), then the oldest."""

    #: the grant's id: the entry id of the ``add_credits`` that made it
    id: str
    #: what the operator called it (``"purchase"``, ``"promo"``, ...)
    kind: str
    #: what is left of it
    remaining: Decimal
    #: when it stops counting (UTC); ``None``: never
    expires_at: datetime | None
    priority: int
    #: when it was granted (UTC, to the millisecond)
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Balance:
    """A user's prepaid balance (:meth:`BudgetManager.get_balance`)."""

    #: what the live grants have left plus the part outside grants (a
    #: balance from before grants, money refunded to it; negative: a debt)
    total: Decimal
    #: what admission would let the user spend now, before ``min_balance``:
    #: the balance it counts less what open leases hold
    available: Decimal
    #: what the user's own open leases hold (a lease on a team's pool holds
    #: the pool's balance: it counts in the user's caps, not here)
    held: Decimal
    #: the live grants, in the order charges draw on them (at most
    #: ``GRANTS_LISTED``)
    grants: list[Grant]


@dataclass(frozen=True, slots=True)
class SweepReport:
    """What :meth:`BudgetManager.sweep_expired_credits` expired (or, in a dry
    run, would expire)."""

    #: the grants' remainders expired (one ``expire`` ledger entry each)
    count: int
    #: their sum
    amount: Decimal
    #: nothing was changed
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class RefundResult:
    """What :meth:`BudgetManager.refund` gave back."""

    #: the refund's own ledger entry id (a replay returns the first call's)
    entry_id: str
    #: the charge refunded (its entry id)
    charge_id: str
    #: the amount refunded by this call (``None``: spooled, "all that is
    #: left" is decided when it reaches Redis)
    refunded: Decimal | None
    #: what is left to refund of the charge after it (``None`` when spooled)
    refundable_left: Decimal | None
    #: the user's balance after it (``None`` when the charge took nothing
    #: off a balance, or when spooled); a team charge's: the team pool's
    balance_after: Decimal | None
    #: True when an idempotency key replayed it
    replayed: bool = False
    #: True when Redis was unreachable and the refund went to the spool
    spooled: bool = False
    #: the team whose pool the charge was on (``None``: the user's own)
    team_id: str | None = None
