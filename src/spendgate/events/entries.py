"""What an event dispatcher reads and writes: stream entries and dead letters.

Shared by :mod:`spendgate.events.streams` (reading, acknowledging) and
:mod:`spendgate.events.claims` (heartbeats, claims), and by ``spendgate
events tail``.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Literal, NamedTuple

from spendgate.core.keys import Keys
from spendgate.core.scripts import lua_dir
from spendgate.core.shards import BUCKET_MARK
from spendgate.events.model import Event, from_events_entry, from_ledger_entry
from spendgate.ledger.entries import RawFields, clean_text

#: which stream of its home an entry came from
Source = Literal["events", "ledger"]


def stream_of(home: Keys, source: Source) -> str:
    """The ``source`` stream of one stream home."""
    return home.events if source == "events" else home.ledger


class Entry(NamedTuple):
    """One stream entry given to this dispatcher."""

    #: the stream it came from
    source: Source
    #: its stream id
    stream_id: str
    #: its fields; ``None`` when it was deleted (trimmed) meanwhile
    fields: RawFields | None
    #: its stream home: an index of ``Keys.stream_homes()`` (0: the root,
    #: then sharded bucket ``home - 1``)
    home: int = 0


class DeadLetter(NamedTuple):
    """An event no target took, for the dead-letter stream."""

    entry: Entry
    #: the event's id (the ledger entry id of a fact event)
    event_id: str
    #: the event as JSON (empty when the entry could not be read as one)
    body: bytes
    #: the target that did not take it (``-``: none, the entry is malformed)
    target: str
    #: attempts made
    attempts: int
    #: the last error, as text
    error: str


@cache
def lua_source(name: str) -> bytes:
    """A script of ``lua/`` that is loaded on its own (no ``_lib.lua``)."""
    return (lua_dir() / f"{name}.lua").read_bytes()


def stream_replies(raw: Any) -> list[tuple[str, Any]]:
    """An ``XREAD``/``XREADGROUP`` reply as ``(stream name, entries)`` pairs."""
    if not raw:
        return []
    if isinstance(raw, dict):  # RESP3 (read as the flusher reads it)
        return [
            (clean_text(name), e[0] if e and isinstance(e[0], list) else e)
            for name, e in raw.items()
        ]
    return [(clean_text(item[0]), item[1]) for item in raw]


def event_of(entry: Entry) -> Event | None:
    """The event of one entry; ``None`` for a ledger entry that is no event.

    :raise PoisonEntryError: the entry cannot be read as an event
    """
    fields = entry.fields
    if fields is None:
        return None  # deleted meanwhile: nothing to deliver
    if entry.source == "ledger":
        return from_ledger_entry(fields)
    return from_events_entry(events_entry_id(entry.stream_id, entry.home), fields)


def events_entry_id(stream_id: str, home: int) -> str:
    """The event id of an events stream entry: its stream id, and for a
    bucket's stream ``"~<bucket>"`` after it, as lease and entry ids name
    their bucket (:data:`~spendgate.core.shards.BUCKET_MARK`). Each bucket's
    stream numbers its entries by itself, so two buckets' entries can share
    a stream id; receivers deduplicate by event id. The root's entries (and
    so every entry unsharded) keep the stream id alone.

    :param home: the entry's home, an index of ``Keys.stream_homes()``:
        ``(root, bucket 0, bucket 1, ...)``
    """
    return stream_id if home == 0 else f"{stream_id}{BUCKET_MARK}{home - 1}"
