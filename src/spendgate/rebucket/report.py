"""What a rebucketing reports (:class:`RebucketReport`): what it did, or
with ``dry_run`` would do, and why it would refuse."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RebucketReport"]


@dataclass
class RebucketReport:
    """What a rebucketing did (or, with ``dry_run``, would do). SCAN may
    meet a key again at its new name, later in the pass: a large run's
    counts can then include it twice (its second visit changes nothing)."""

    from_buckets: int
    to_buckets: int
    dry_run: bool
    #: the run's id (its marks and forwards carry it)
    run: str = ""
    #: keys moved to the home the new layout keeps them in
    moved: int = 0
    #: idempotency records copied to each bucket their user can be in
    copied: int = 0
    #: a project's or the platform's day and month counters added up
    merged: int = 0
    #: a project's or the platform's cap overrides copied to every bucket
    limits: int = 0
    #: charges' and finished holds' records whose id names another bucket
    #: than their user's: forwarded
    forwarded: int = 0
    #: counts of caps a sharded layout does not keep (a project's or the
    #: platform's week, minute, per-model spend): not carried over
    dropped: int = 0
    #: entries of streams no consumer group reads, in homes that are gone:
    #: appended to the root's
    stream_entries: int = 0
    #: what the homes that are gone kept of their own (streams read to the
    #: end, the pending holds' index, heartbeats' sets): deleted
    removed: int = 0
    #: keys already where the new layout keeps them
    unchanged: int = 0
    #: the keys were laid out for ``to_buckets`` already: nothing to do
    already: bool = False
    #: why the rebucketing would refuse (``dry_run``; a run raises them)
    refusals: list[str] = field(default_factory=list)
