"""The two layouts of a rebucketing, side by side: where a key is now and
where the new bucket count keeps it.

A home is the root (``{sg}``) or a bucket (``{sg:<n>}``). The old layout's
homes are the root alone (one bucket) or its buckets (the root keeps no
user's keys then); the new layout's likewise. A user's keys go to the
user's bucket, a lease's or a charge's record to the bucket its id names
(:meth:`~spendgate.core.keys.Keys.of_id`, as the calls look it up), an
idempotency record (the user is not in it) to every bucket a user of its
old bucket can be in now.
"""

from __future__ import annotations

from math import gcd

from spendgate.core.keys import Keys
from spendgate.core.shards import keys_for

__all__ = ["Layouts"]


class Layouts:
    """The old (``from_buckets``) and new (``to_buckets``) layouts of one
    deployment's keys."""

    def __init__(self, key_prefix: str, from_buckets: int, to_buckets: int) -> None:
        self.from_buckets, self.to_buckets = from_buckets, to_buckets
        self.old = keys_for(key_prefix, from_buckets)
        self.new = keys_for(key_prefix, to_buckets)
        #: the root's keys: the same in both
        self.root = Keys(key_prefix)
        self._homes: dict[int | None, Keys] = {None: self.root}
        self._prefix = key_prefix

    def home(self, number: int | None) -> Keys:
        """The root's keys (``None``) or bucket ``number``'s."""
        keys = self._homes.get(number)
        if keys is None:
            keys = self._homes[number] = Keys(self._prefix, f"sg:{number}")
        return keys

    @staticmethod
    def number(keys: Keys, layout: Keys) -> int | None:
        """Which home of ``layout`` ``keys`` are: a bucket's number, or
        ``None`` for the root."""
        buckets = layout.buckets()
        if buckets[0] is layout:
            return None
        return next(n for n, b in enumerate(buckets) if b is keys)

    def old_homes(self) -> tuple[Keys, ...]:
        """Where the old layout keeps users' keys and counters."""
        return self.old.buckets()

    def new_homes(self) -> tuple[Keys, ...]:
        """Where the new layout keeps them."""
        return self.new.buckets()

    def vanishing(self) -> list[Keys]:
        """The old layout's homes the new one does not have (its readers do
        not read them)."""
        kept = {k.base for k in self.new.stream_homes()}
        return [k for k in self.old.stream_homes() if k.base not in kept]

    def shared_home(self) -> Keys:
        """Where the new layout keeps a project's or the platform's added-up
        counters: the root (one bucket), else bucket 0."""
        return self.new_homes()[0]

    def candidates(self, number: int | None) -> tuple[Keys, ...]:
        """Every home of the new layout a user of home ``number`` (``None``:
        the root) can be in: an idempotency record of theirs goes to each.

        Users of old bucket ``b`` of ``n`` are those whose hash is ``b``
        modulo ``n``; modulo ``m`` they are then in the buckets ``k`` with
        ``k`` equal to ``b`` modulo gcd(n, m). A record in a bucket of the
        new layout (a run that stopped, run again) finds its own class.
        """
        new = self.new_homes()
        if self.to_buckets == 1:
            return new
        if number is None:
            return new if self.from_buckets == 1 else (self.root,)
        step = gcd(max(self.from_buckets, 1), self.to_buckets)
        return tuple(k for n, k in enumerate(new) if n % step == number % step)
