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


def _pricing_json(
    breakdown: CostBreakdown, version: int | None, plan: str | None
) -> str:
    """:func:`_pricing_of` as the JSON ``encode_metadata`` writes for it
    (keys sorted, compact), built directly: on a deduct's path, json.dumps of
    the nested dict cost more than the pricing itself."""
    b = breakdown
    names = b.tools_by_name
    if not names:
        by_name = "{}"
    elif all(k.isascii() and k.isidentifier() for k in names):
        # names JSON writes as they are (the common case: web_search)
        by_name = "{" + ",".join(f'"{k}":"{names[k]:f}"' for k in sorted(names)) + "}"
    else:
        by_name = json.dumps(
            {k: format(v, "f") for k, v in names.items()},
            sort_keys=True,
            separators=(",", ":"),
        )
    # (keys sorted: "plan" comes after "model", only when there is one)
    plan_part = "" if plan is None else f'"plan":{json.dumps(plan)},'
    return (
        f'"pricing":{{"cache":"{b.cache:f}","fixed":"{b.fixed:f}",'
        f'"model":"{b.model:f}",{plan_part}"search":"{b.search:f}",'
        f'"tools":"{b.tools:f}","tools_by_name":{by_name},"total":"{b.total:f}",'
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
    tokens = None
    if isinstance(usage, UsageMetrics):
        tokens = {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
        }
    if extra:  # the caller's own metadata: the general path
        meta = dict(extra)
        if breakdown is not None:
            meta["pricing"] = pricing_of(breakdown, version, plan)
        if tokens is not None:
            meta["usage"] = tokens
        return encode_metadata(meta, max_bytes)
    parts = []
    if breakdown is not None:
        parts.append(_pricing_json(breakdown, version, plan))
    if tokens is not None:
        parts.append(
            f'"usage":{{"input_tokens":{tokens["input_tokens"]},'
            f'"output_tokens":{tokens["output_tokens"]}}}'
        )
    text = "{" + ",".join(parts) + "}" if parts else ""
    if len(text) > max_bytes:
        raise InvalidArgumentError(
            f"metadata is {len(text)} bytes as JSON, above the limit of {max_bytes}"
        )
    return text
