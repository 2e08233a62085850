"""What the HTTP service reads and answers for a one-call charge:
``POST /v1/deduct`` (usage priced by the active book, or an amount) and
``POST /v1/deduct/fixed`` (a book's fixed job).

As in :mod:`spendgate.server.schemas`: strict request models (no coercion,
no unknown fields), response models built by their ``of`` constructors,
amounts as exact decimal strings.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from spendgate.models import DeductResult
from spendgate.pricing.usage import (
    MAX_COUNT,
    MAX_TOOL_NAME,
    CostBreakdown,
    ToolCall,
    UsageMetrics,
)
from spendgate.server.fields import Amount, Id, Metadata, ModelName, _integral
from spendgate.server.limit_schemas import CapWarningBody, warnings_of

_STRICT = ConfigDict(extra="forbid", strict=True)

#: the most tool calls one usage may list (the body's size limit bounds it
#: too; this keeps what one request prices bounded whatever that limit is)
MAX_TOOL_CALLS = 1000

#: a usage counter: a JSON integer, 0 to the largest the pricing takes
Count = Annotated[int, Field(ge=0, le=MAX_COUNT), BeforeValidator(_integral)]
#: a tool's name, as the price book's ``tools`` keys it
ToolName = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TOOL_NAME)]
#: a fixed job's name, as the price book's ``fixed`` keys it
JobName = Annotated[str, StringConstraints(min_length=1, max_length=256)]


def _money(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


class ToolCallBody(BaseModel):
    """One tool invocation, priced by ``name``."""

    model_config = _STRICT
    name: ToolName


class UsageBody(BaseModel):
    """The usage of one call, priced by the active price book (the fields of
    ``UsageMetrics``)."""

    model_config = _STRICT
    #: the model, looked up in the book's ``models`` (``null``: its ``_default``)
    model: ModelName | None = None
    input_tokens: Count = 0
    output_tokens: Count = 0
    cache_read_tokens: Count = 0
    cache_write_tokens: Count = 0
    tool_calls: list[ToolCallBody] = Field(
        default_factory=list, max_length=MAX_TOOL_CALLS
    )
    search_queries: Count = 0
    search_results: Count = 0
    web_search_calls: Count = 0
    code_exec_calls: Count = 0

    def metrics(self) -> UsageMetrics:
        """The usage as the library prices it."""
        return UsageMetrics(
            model=self.model,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cache_read_tokens=self.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens,
            tool_calls=tuple(ToolCall(call.name) for call in self.tool_calls),
            search_queries=self.search_queries,
            search_results=self.search_results,
            web_search_calls=self.web_search_calls,
            code_exec_calls=self.code_exec_calls,
        )


class DeductRequest(BaseModel):
    """``POST /v1/deduct``: price ``usage`` (or take ``amount``) and charge it
    in one step, or refuse; exactly one of the two."""

    model_config = _STRICT
    user_id: Id
    usage: UsageBody | None = None
    amount: Amount | None = None
    project_id: Id | None = None
    #: charge this team's shared pool (the user must be a member)
    team_id: Id | None = None
    #: the model of an ``amount`` (a ``usage`` names its own: a different
    #: one is refused); its per-model caps are checked too
    model: ModelName | None = None
    idempotency_key: Id | None = None
    metadata: Metadata | None = None

    @model_validator(mode="after")
    def _one_charge(self) -> DeductRequest:
        if (self.usage is None) == (self.amount is None):
            raise ValueError("give exactly one of usage and amount")
        return self

    def charge(self) -> UsageMetrics | Decimal:
        """What ``deduct`` is given: the usage, or the amount."""
        if self.usage is not None:
            return self.usage.metrics()
        assert self.amount is not None  # (_one_charge)
        return self.amount


class DeductFixedRequest(BaseModel):
    """``POST /v1/deduct/fixed``: charge the active price book's fixed price
    of ``job`` (its ``fixed`` section)."""

    model_config = _STRICT
    user_id: Id
    job: JobName
    project_id: Id | None = None
    #: charge this team's shared pool (the user must be a member)
    team_id: Id | None = None
    idempotency_key: Id | None = None
    metadata: Metadata | None = None


class BreakdownBody(BaseModel):
    """The price by dimension, exact and unrounded (fixed-point strings);
    ``total`` is their sum, clamped at zero."""

    total: str
    model: str
    tools: str
    search: str
    cache: str
    fixed: str
    tools_by_name: dict[str, str]

    @classmethod
    def of(cls, breakdown: CostBreakdown) -> BreakdownBody:
        # (fixed point, as the ledger row's pricing metadata writes them)
        return cls.model_validate(breakdown.to_dict())


class DeductResponse(BaseModel):
    status: Literal["charged"]
    entry_id: str
    user_id: str
    #: the amount charged (the price, rounded up to the micro-unit)
    amount: str
    #: the part of ``amount`` the user's plan allowance paid ("0": none)
    allowance_used: str
    #: the balance after (the team pool's with ``team_id``)
    balance_after: str | None
    #: the price by dimension; ``null`` for an amount, or a replay
    breakdown: BreakdownBody | None
    #: the price book version that priced it; ``null``: no book
    price_version: int | None
    replayed: bool
    #: the thresholds of ``warn`` caps this charge reached (a replay: the
    #: first call's)
    warnings: list[CapWarningBody]
    team_id: str | None

    @classmethod
    def of(cls, result: DeductResult) -> DeductResponse:
        breakdown = result.breakdown
        return cls(
            status="charged",
            entry_id=result.entry_id,
            user_id=result.user_id,
            amount=str(result.amount),
            allowance_used=str(result.allowance_used),
            balance_after=_money(result.balance_after),
            breakdown=None if breakdown is None else BreakdownBody.of(breakdown),
            price_version=result.price_version,
            replayed=result.replayed,
            warnings=warnings_of(result.warnings),
            team_id=result.team_id,
        )
