"""What a ``deduct`` writes on its ledger entry: the caller's metadata, the
pricing (breakdown and price book version) and the usage's tokens (the
ledger row's token columns read them).

Built directly as the JSON :func:`spendgate.core.ids.encode_metadata` would
write when the caller gave no metadata of its own (on a deduct's path,
``json.dumps`` of the nested dict cost more than the pricing itself); a test
holds the two equal.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from spendgate.core.ids import encode_metadata
from spendgate.errors import InvalidArgumentError
from spendgate.pricing.usage import CostBreakdown, UsageMetrics

#: metadata keys the charge writes itself
_RESERVED_METADATA = ("pricing", "usage")


def metadata_of(metadata: Mapping[str, Any] | None) -> dict[str, Any]:
    """The caller's metadata, checked: a mapping that does not use the keys
    the charge writes itself."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError("metadata must be a mapping")
    taken = [k for k in _RESERVED_METADATA if k in metadata]
    if taken:
        raise InvalidArgumentError(
            f"metadata keys {taken} are written by deduct itself"
        )
    return dict(metadata)


def arguments_metadata(extra: dict[str, Any], max_bytes: int) -> str:
    """The caller's own metadata as a deduct's idempotency fingerprint takes
    it: without the pricing the charge adds, which a retry priced after an
    activation (or for a changed plan) would come to differently, making a
    replay a conflict. For an amount it is the charge's metadata itself."""
    return encode_metadata(extra, max_bytes) if extra else ""


def pricing_of(
    breakdown: CostBreakdown | None, version: int | None, plan: str | None = None
) -> dict[str, Any]:
    """The ``pricing`` block of a charge's metadata (``plan``: the user's
    plan it was priced for, when the user has one)."""
    block: dict[str, Any] = {} if breakdown is None else dict(breakdown.to_dict())
    block["version"] = version
    if plan is not None:
        block["plan"] = plan
    return block


def _fixed_point(value: Decimal) -> str:
    """``format(value, "f")``: ``str`` gives the same text for every value
    without an exponent in it (a price's usual shape), at a third of the cost."""
    text = str(value)
    return format(value, "f") if "E" in text else text


def _pricing_json(
    breakdown: CostBreakdown, version: int | None, plan: str | None
) -> str:
    """:func:`_pricing_of` as the JSON ``encode_metadata`` writes for it
    (keys sorted, compact), built directly: on a deduct's path, json.dumps of
    the nested dict cost more than the pricing itself."""
    b = breakdown
    f = _fixed_point
    names = b.tools_by_name
    # names JSON writes as they are (the common case: web_search), sorted
    plain = [
        f'"{k}":"{f(names[k])}"'
        for k in sorted(names)
        if k.isascii() and k.isidentifier()
    ]
    if len(plain) == len(names):
        by_name = "{" + ",".join(plain) + "}"
    else:
        by_name = json.dumps(
            {k: format(v, "f") for k, v in names.items()},
            sort_keys=True,
            separators=(",", ":"),
        )
    # (keys sorted: "plan" comes after "model", only when there is one)
    plan_part = "" if plan is None else f'"plan":{json.dumps(plan)},'
    return (
        f'"pricing":{{"cache":"{f(b.cache)}","fixed":"{f(b.fixed)}",'
        f'"model":"{f(b.model)}",{plan_part}"search":"{f(b.search)}",'
        f'"tools":"{f(b.tools)}","tools_by_name":{by_name},"total":"{f(b.total)}",'
        f'"version":{"null" if version is None else version}}}'
    )


def ledger_metadata(
    extra: dict[str, Any],
    usage: Any,
    breakdown: CostBreakdown | None,
    version: int | None,
    max_bytes: int,
    plan: str | None = None,
) -> str:
    """The charge's metadata: the caller's, the pricing (breakdown, version
    and the user's plan) and the usage's tokens (the ledger row's token
    columns read them)."""
    metered = isinstance(usage, UsageMetrics)
    if extra:  # the caller's own metadata: the general path
        meta = dict(extra)
        if breakdown is not None:
            meta["pricing"] = pricing_of(breakdown, version, plan)
        if metered:
            meta["usage"] = {
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
            }
        return encode_metadata(meta, max_bytes)
    if metered:
        tokens = (
            f'"usage":{{"input_tokens":{usage.input_tokens},'
            f'"output_tokens":{usage.output_tokens}}}'
        )
        if breakdown is None:
            text = "{" + tokens + "}"
        else:
            text = "{" + _pricing_json(breakdown, version, plan) + "," + tokens + "}"
    elif breakdown is not None:
        text = "{" + _pricing_json(breakdown, version, plan) + "}"
    else:
        text = ""
    if len(text) > max_bytes:
        raise InvalidArgumentError(
            f"metadata is {len(text)} bytes as JSON, above the limit of {max_bytes}"
        )
    return text
