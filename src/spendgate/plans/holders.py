"""Whose hold a lease id is, as this manager knows it: so that a ``settle``
or an ``extend`` given only a lease id (what the HTTP routes and the CLI
pass) sends the plan argument of the hold's user and is one round trip.

Without it such a call does not know the hold's user and sends "no plan
expected" (``"="``, ``lua/_allowance.lua``); for a user with a plan the
script answers ``STALE_PRICE`` naming the user and the call is made again:
two round trips. A manager remembers the user of each hold it takes
(``reserve``, ``reserve_up_to``) or extends, but only for a user it knows
to have a plan: for any other user ``"="`` is already right in one.

An entry is a guess, like the users' plans of :mod:`spendgate.plans.cache`:
the script still checks the plan argument against the hold's user's plan
and answers ``STALE_PRICE`` when they differ, so a wrong or missing entry
costs a retry, never a wrong charge. An entry goes when its hold is
settled or released, or an extend finds it ended; when the hold's expiry
has passed (found on a read, or at the head of the map when another is
added); and, beyond :data:`HOLDS_MAX` entries, the least recently taken or
extended first.

Memory: about 235 bytes an entry, 2.4 MB at :data:`HOLDS_MAX` (CPython 3.11,
tracemalloc): 157 for the entry (the ordered dict's slot and link, the
``(user, expiry)`` tuple, the expiry's int) and 77 for the lease id's
32-character string it keeps; the user id is the caller's string, shared
with the lease.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["HOLDS_MAX", "HoldUsers"]

#: the holds whose user a manager remembers
HOLDS_MAX = 10_000
#: expired entries dropped from the head of the map per entry added: more
#: than one, so that they go faster than entries come
_SWEEP = 2


class HoldUsers:
    """Lease id -> the hold's user and expiry (ms), least recent first."""

    __slots__ = ("_entries", "limit")

    def __init__(self, limit: int = HOLDS_MAX) -> None:
        self._entries: OrderedDict[str, tuple[str, int]] = OrderedDict()
        #: the most entries kept
        self.limit = limit

    def __len__(self) -> int:
        return len(self._entries)

    def user(self, lease_id: str, now_ms: int) -> str:
        """The hold's user (``""``: not known, or its expiry has passed)."""
        entry = self._entries.get(lease_id)
        if entry is None:
            return ""
        if now_ms >= entry[1]:
            del self._entries[lease_id]
            return ""
        return entry[0]

    def remember(self, lease_id: str, user: str, expires_ms: int, now_ms: int) -> None:
        """The hold's user and its expiry, as just taken or extended."""
        entries = self._entries
        entries[lease_id] = (user, expires_ms)
        entries.move_to_end(lease_id)
        for _ in range(_SWEEP):
            head = next(iter(entries), None)
            if head is None or now_ms < entries[head][1]:
                break
            del entries[head]
        if len(entries) > self.limit:
            entries.popitem(last=False)

    def forget(self, lease_id: str) -> None:
        """The hold has ended (settled, released, expired)."""
        self._entries.pop(lease_id, None)
