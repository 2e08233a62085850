"""Spreading a deployment's keys over buckets of users (``cluster_buckets``).

With one bucket (the default) every key is below ``"<prefix>:{sg}:"``: one
cluster slot, one master. With ``n`` buckets, a user belongs to bucket
``crc32(user id) % n``, and every key a call for that user touches is below
``"<prefix>:{sg:<bucket>}:"``: the user's counters, balance, grants, plan
and allowance, holds and their expiry index, idempotency and refund
records, and the bucket's own ledger and events streams. Each bucket is a
hash tag of its own, so a Redis Cluster spreads the buckets over its
masters and each call is still one script on one master.

A lease or entry id made in a bucket ends in ``"~<bucket>"``, so a settle,
release, extend or refund given only the id finds its slot. The scripts
take their keys' base from their first key (``lua/`` builds every other key
from it: :func:`spendgate.core.scripts.configured_source`), so all the keys
of a call share that key's slot by construction.

What stays below ``{sg}`` (the root): the price books, the plans, and what
only the root decides. What a bucket cannot decide is refused on a sharded
deployment: project and global caps (no bucket sees a project's or the
platform's whole spend; :class:`~spendgate.config.BudgetConfig` refuses such
defaults, ``set_limits`` such overrides) and teams (a team's pool is shared
by users of every bucket). The spend of a project or of the platform is the
sum of the buckets' counters (``get_usage`` adds them up).
"""

from __future__ import annotations

from typing import Any
from zlib import crc32

from spendgate.core.keys import KEY_PARTS, Keys
from spendgate.errors import ConfigurationError

__all__ = [
    "BUCKET_MARK",
    "ShardedKeys",
    "bucket_of",
    "check_layout",
    "keys_for",
    "layout_key",
    "layout_value",
    "read_layout",
]

#: what separates a lease or entry id made in a bucket from its bucket
BUCKET_MARK = "~"


def bucket_of(user_id: str, buckets: int) -> int:
    """The bucket of ``user_id`` among ``buckets`` (stable across processes
    and versions: CRC-32 of the id's UTF-8)."""
    return crc32(user_id.encode()) % buckets


def keys_for(key_prefix: str, buckets: int) -> Keys:
    """The keys of a deployment: :class:`Keys` with one bucket, else
    :class:`ShardedKeys`."""
    if buckets == 1:
        return Keys(key_prefix)
    return ShardedKeys(key_prefix, buckets)


class ShardedKeys(Keys):
    """A sharded deployment's keys: these are the root's (``{sg}``), and
    :meth:`of` / :meth:`of_id` give a bucket's."""

    __slots__ = ("_buckets", "_count")

    def __init__(self, key_prefix: str, buckets: int) -> None:
        super().__init__(key_prefix)
        self._count = buckets
        self._buckets = tuple(Keys(key_prefix, f"sg:{b}") for b in range(buckets))

    def of(self, user_id: str) -> Keys:
        return self._buckets[bucket_of(user_id, self._count)]

    def of_id(self, some_id: str) -> Keys:
        """The bucket a lease or entry id names; the root's for an id that
        names none (an id from before sharding, or a made-up one: the call
        then finds nothing there, as for any unknown id)."""
        mark = some_id.rfind(BUCKET_MARK)
        number = some_id[mark + 1 :]
        if mark < 0 or not number.isdigit() or not number.isascii():
            return self
        bucket = int(number)
        return self._buckets[bucket] if bucket < self._count else self

    def id_for(self, new_id: str, user_id: str) -> str:
        return f"{new_id}{BUCKET_MARK}{bucket_of(user_id, self._count)}"

    def of_key(self, key: str) -> Keys:
        """The bucket whose tag ``key`` carries; the root's for any other."""
        head = self.base[:-2] + ":"  # "<prefix>:{sg:", a bucket's tag opening
        if key.startswith(head):
            number = key[len(head) : key.find("}", len(head))]
            if number.isdigit() and number.isascii() and int(number) < self._count:
                return self._buckets[int(number)]
        return self

    def id_like(self, new_id: str, other_id: str) -> str:
        keys = self.of_id(other_id)
        if keys is self:
            return new_id
        return new_id + other_id[other_id.rfind(BUCKET_MARK) :]

    def id_in(self, some_id: str, bucket: Keys) -> str:
        made = some_id.partition(BUCKET_MARK)[0]
        if bucket not in self._buckets:
            return made
        return f"{made}{BUCKET_MARK}{self._buckets.index(bucket)}"

    def buckets(self) -> tuple[Keys, ...]:
        return self._buckets

    def stream_homes(self) -> tuple[Keys, ...]:
        return (self, *self._buckets)


def layout_key(key_prefix: str) -> str:
    """The root's key naming the bucket count the keys are laid out for
    (:func:`layout_value`); absent, nothing was ever rebucketed."""
    return Keys(key_prefix).base + KEY_PARTS["LAYOUT"]


def layout_value(to: int, moving_from: int = 0, run: str = "") -> str:
    """``"<to>"`` once laid out for ``to`` buckets; ``"<from>><to>:<run>"``
    while the rebucketing ``run`` moves keys from ``moving_from`` buckets."""
    return f"{moving_from}>{to}:{run}" if run else str(to)


def read_layout(value: object) -> tuple[str, str, str] | None:
    """``(from, to, run)`` of a :func:`layout_value`, as text (laid out:
    ``from == to`` and no run); ``None`` for no value."""
    if value is None:
        return None
    state = value.decode() if isinstance(value, bytes) else str(value)
    moves, _, run = state.partition(":")
    old, _, new = moves.partition(">")
    return old, new or old, run


async def check_layout(redis: Any, key_prefix: str, buckets: int) -> None:
    """Refuse to run with another bucket count than the keys are laid out
    for (:func:`layout_key`, which a rebucketing, spendgate.rebucket,
    writes); absent, any count is taken.

    :raise ConfigurationError: the keys are laid out for another count, or
        a rebucketing is under way
    """
    state = read_layout(await redis.get(layout_key(key_prefix)))
    if state is None:
        return
    old, new, run = state
    if run:
        raise ConfigurationError(
            f"a rebucketing ({old} buckets) is under way or stopped half way: "
            "finish it (spendgate rebucket) before starting"
        )
    if new != str(buckets):
        raise ConfigurationError(
            f"the keys are laid out for {new} buckets (spendgate rebucket): set "
            f"cluster_buckets={new}, not {buckets}"
        )
