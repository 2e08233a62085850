"""The delivered event, and how stream entries become one.

Two streams carry events. The events stream (``Keys.events``) holds what a
script writes besides a fact: a threshold crossed, a kill switch, a low
balance, in the fields of :data:`~spendgate.core.protocol.EVENT_FIELDS`;
the event's id is the stream entry's id. The *fact* events
(``credits.deducted``, ``credits.added``, ``credits.refunded``,
``credits.expired``) are the ledger stream's entries read as events: the
script that records a fact writes nothing more (the hot path pays
nothing), and the event's id is the ledger entry id the API returned, so a
consumer can rebuild every balance from the events alone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from spendgate.core.money import from_micros
from spendgate.core.protocol import EVENT_FIELDS, FIELD, EventType, LedgerKind
from spendgate.core.windows import from_ms, to_ms
from spendgate.errors import PoisonEntryError
from spendgate.ledger.entries import (
    COLUMNS,
    FIELDS,
    ColumnType,
    RawFields,
    clean_text,
)

#: a ledger entry's kind -> the event it is; a kind not listed (an
#: operator's ``adjust`` of a counter) is no event
FACT_EVENTS: dict[str, EventType] = {
    LedgerKind.SPEND: EventType.DEDUCTED,
    LedgerKind.SETTLE: EventType.DEDUCTED,
    LedgerKind.CREDIT: EventType.ADDED,
    LedgerKind.GRANT: EventType.ADDED,
    LedgerKind.REFUND: EventType.REFUNDED,
    LedgerKind.EXPIRE: EventType.EXPIRED,
}

#: the event types read off the ledger stream
FACT_TYPES = frozenset(FACT_EVENTS.values())

#: the ledger columns that are the event's own attributes, not its data
_OWN_COLUMNS = ("entry_id", "occurred_at", "user_id")
#: the scope a fact event names, by the ledger's ``scope`` field (a fact
#: with none is its team's when it names one, else its user's) -> the
#: column holding that scope's id
_SCOPE_ID_COLUMNS = {"user": "user_id", "project": "project_id", "team": "team_id"}

_EVENT_NAMES = {f.attribute: f.name.encode() for f in EVENT_FIELDS}


@dataclass(frozen=True, slots=True)
class Event:
    """One event, as handlers and webhooks get it.

    The ``id`` is stable: every delivery of one event carries the same id,
    so a receiver that remembers the ids it processed processes each once.
    """

    #: stable id: the ledger entry id of a fact event, the events stream
    #: entry id of the others
    id: str
    #: the event type, one of :class:`~spendgate.core.protocol.EventType`
    #: (``credits.deducted``, ``credits.cap_reached``...)
    type: str
    #: when it happened (UTC, millisecond precision)
    occurred_at: datetime
    #: the user concerned (``None`` for a project's or the global scope's)
    user_id: str | None = None
    #: the scope: ``"user"``, ``"project"``, ``"global"`` (``"team"``)
    scope: str | None = None
    #: the scope's id (``None`` for the global scope)
    scope_id: str | None = None
    #: a threshold event's kind of window (``"daily"``, ``"monthly"``,
    #: ``"balance"``...); a refund's, the day of the counters it lowered
    #: (``"YYYY-MM-DD"``, its ledger entry's); ``None`` when it has none
    window: str | None = None
    #: the rest, by type: a fact's ``amount`` (a decimal string), ``kind``,
    #: ``model``, ``project_id``, ``metadata``...; a threshold's numbers
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The event as JSON-ready values: ``occurred_at`` as ISO 8601 UTC
        with milliseconds, decimals as strings (never floats)."""
        return {
            "id": self.id,
            "type": self.type,
            "occurred_at": iso_ms(self.occurred_at),
            "user_id": self.user_id,
            "scope": self.scope,
            "scope_id": self.scope_id,
            "window": self.window,
            "data": self.data,
        }

    def to_json(self) -> bytes:
        """The event as compact JSON (what a webhook's body is)."""
        return json.dumps(
            self.to_dict(), separators=(",", ":"), default=_json_default
        ).encode()

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> Event:
        """The event :meth:`to_dict` (or a webhook body, parsed) describes."""
        return cls(
            id=str(value["id"]),
            type=str(value["type"]),
            occurred_at=datetime.fromisoformat(
                str(value["occurred_at"]).replace("Z", "+00:00")
            ),
            user_id=value.get("user_id"),
            scope=value.get("scope"),
            scope_id=value.get("scope_id"),
            window=value.get("window"),
            data=dict(value.get("data") or {}),
        )


def iso_ms(moment: datetime) -> str:
    """``2026-03-15T12:00:00.123Z``"""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{to_ms(moment) % 1000:03d}Z"


def _json_default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return iso_ms(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _text(raw: bytes | None) -> str | None:
    return clean_text(raw) if raw else None


def from_events_entry(stream_id: str, fields: RawFields) -> Event:
    """The event of one events stream entry (its id is the entry's).

    :raise PoisonEntryError: no type, or a time that is not a number, or
        data that is not a JSON object
    """
    names = _EVENT_NAMES
    kind = _text(fields.get(names["type"]))
    try:
        occurred_ms = int(fields[names["occurred_at"]])
    except (KeyError, ValueError) as exc:
        raise PoisonEntryError(f"malformed event {stream_id}: {exc!r}") from None
    if kind is None:
        raise PoisonEntryError(f"malformed event {stream_id}: no type")
    raw_data = fields.get(names["data"])
    data: Any = {}
    if raw_data:
        try:
            # Floats stay exact: decimals, never binary floats.
            data = json.loads(clean_text(raw_data), parse_float=Decimal)
        except ValueError as exc:
            raise PoisonEntryError(
                f"malformed event {stream_id}: data is not JSON ({exc})"
            ) from None
        if not isinstance(data, dict):
            data = {"value": data}
    return Event(
        id=stream_id,
        type=kind,
        occurred_at=from_ms(occurred_ms),
        user_id=_text(fields.get(names["user_id"])),
        scope=_text(fields.get(names["scope"])),
        scope_id=_text(fields.get(names["scope_id"])),
        window=_text(fields.get(names["window"])),
        data=data,
    )


def _value(kind: ColumnType, raw: bytes) -> Any:
    """One ledger field as the event's data holds it."""
    if kind is ColumnType.MICROS:
        return str(from_micros(int(raw)))
    if kind in (ColumnType.INTEGER, ColumnType.MILLIS):
        return int(raw)
    if kind is ColumnType.FLAG:
        return raw == b"1"
    if kind is ColumnType.JSON:
        try:
            return json.loads(clean_text(raw), parse_float=Decimal)
        except ValueError:
            return {"_unparsed": clean_text(raw)}
    return clean_text(raw)


def fact_kind(fields: RawFields) -> str | None:
    """A ledger entry's kind, ``None`` when it has none."""
    return _text(fields.get(FIELD["kind"].encode()))


def from_ledger_entry(fields: RawFields) -> Event | None:
    """The fact event of one ledger entry; ``None`` for a kind that is no
    event (an ``adjust``).

    :raise PoisonEntryError: no entry id or time, or a malformed number
    """
    kind = fact_kind(fields)
    event_type = FACT_EVENTS.get(kind or "")
    if event_type is None:
        return None
    try:
        entry_id = _text(fields.get(FIELD["entry_id"].encode()))
        occurred_ms = int(fields[FIELD["occurred_at"].encode()])
        data: dict[str, Any] = {}
        for column, spec in FIELDS.items():
            raw = fields.get(spec.name.encode())
            if raw and column not in _OWN_COLUMNS:
                data[column] = _value(COLUMNS[column], raw)
    except (KeyError, ValueError) as exc:
        raise PoisonEntryError(f"malformed ledger entry: {exc!r}") from None
    if entry_id is None:
        raise PoisonEntryError("malformed ledger entry: no entry id")
    user_id = _text(fields.get(FIELD["user_id"].encode()))
    # A fact names its scope only when it is not its user's (an adjust); a
    # team's credit, charge or refund moves the team's pool, not the
    # user's balance, so its event is the team's (user_id: the member).
    own = "team" if "team_id" in data else "user"
    scope = str(data.pop("scope", None) or own)
    id_column = _SCOPE_ID_COLUMNS.get(scope)
    scope_id = user_id if id_column == "user_id" else data.get(id_column or "")
    return Event(
        id=entry_id,
        type=str(event_type),
        occurred_at=from_ms(occurred_ms),
        user_id=user_id,
        scope=scope,
        scope_id=scope_id,
        window=data.pop("window", None),
        data=data,
    )
