"""What a settle answered, as the caller's ``SpendRecord`` (settle.lua's and
the team settle's reply), and the record of a settle that was spooled."""

from __future__ import annotations

from typing import Any

from spendgate.core.money import from_micros
from spendgate.core.protocol import Reply
from spendgate.errors import IdempotencyConflictError, LeaseStateError, StorageError
from spendgate.models import Lease, SpendRecord
from spendgate.ops.base import text
from spendgate.ops.cap_actions import cap_warnings, split_warned
from spendgate.teams import split_entry

_OK, _REPLAYED, _CONFLICT = int(Reply.OK), int(Reply.REPLAYED), int(Reply.CONFLICT)
#: why a lease the store does not know cannot be settled, extended or released
UNKNOWN_LEASE = "unknown (never granted, or forgotten)"


def settled_record(
    reply: list[Any],
    lease_id: str,
    entry_id: str,
    amount: int,
    model: str | None,
    now_ms: int,
    team: str | None = None,
) -> SpendRecord:
    """The record of a settle the store answered (see settle.lua's reply;
    ``team``: a team lease's, whose entry id names the team). ``model`` is
    the call's; with ``model_caps`` the reply names the model the cost
    counted at (the hold's, for a settle by lease id naming none; the first
    settle's, for a replay), and the record names that one."""
    code = reply[0]
    _raise_for_refusal(reply, lease_id)
    settled_ms = now_ms
    crossed = None  # (the thresholds reached in warn scopes: cap actions only)
    if code == _OK:  # this call's entry, time: only the verdict comes back
        late, estimate = reply[3] == 1, reply[4]
        allowance = reply[5] if len(reply) > 5 else 0
        crossed = reply[6] if len(reply) > 6 else None
        if len(reply) > 8:  # (model_caps, or sharded: the model counted at)
            model = text(reply[8]) or None
    else:  # REPLAYED: the first settle's ("...|allowance used" but in older
        # ones; a team settle's has none), then its warnings
        entry_id, tail = split_entry(text(reply[3]), team)
        payload, crossed = split_warned(tail)
        first_ms, late_text, estimate_text, *rest = payload.split("|")
        settled_ms, late, estimate = int(first_ms), late_text == "1", int(estimate_text)
        allowance = int(rest[0]) if rest and rest[0] else 0
        if len(reply) > 4:  # (model_caps: the model the first settle counted at)
            model = text(reply[4]) or None
    project = text(reply[2])
    # Positional, in field order (entry_id, kind, user_id, project_id,
    # amount_micros, model, occurred_ms, replayed, late, spooled, lease_id,
    # estimate_micros): keywords cost the dataclass twice the time.
    record = SpendRecord(
        entry_id,
        "settle",
        text(reply[1]),
        project or None,
        amount,
        model,
        settled_ms,
        code == _REPLAYED,
        late,
        False,
        lease_id,
        estimate,
    )
    if allowance:
        record.allowance_used_micros = allowance
    if crossed:
        record.warnings = cap_warnings(crossed, record.user_id, record.project_id)
    return record


def _raise_for_refusal(reply: list[Any], lease_id: str) -> None:
    """The error of a settle the store did not make (settle.lua's refusals)."""
    code = reply[0]
    if code == Reply.UNKNOWN_LEASE:
        raise LeaseStateError(lease_id, UNKNOWN_LEASE, "settle")
    if code == Reply.MOVED:  # (followed once: a hold moves once per rebucketing)
        raise StorageError(f"the hold of {lease_id} moved again")
    if code == Reply.LEASE_RELEASED:
        raise LeaseStateError(lease_id, "released", "settle")
    if code == _CONFLICT:
        raise IdempotencyConflictError(
            f"settle:{lease_id}", f"already settled at {from_micros(int(reply[1]))}"
        )


def spooled_settle_record(
    lease: Lease | str,
    lease_id: str,
    entry_id: str,
    amount: int,
    model: str | None,
    now_ms: int,
) -> SpendRecord:
    known = lease if isinstance(lease, Lease) else None
    return SpendRecord(
        entry_id=entry_id,
        kind="settle",
        user_id=known.user_id if known is not None else "",
        project_id=known.project_id if known is not None else None,
        amount_micros=amount,
        model=model,
        occurred_ms=now_ms,
        spooled=True,
        lease_id=lease_id,
        estimate_micros=known.amount_micros if known is not None else None,
    )
