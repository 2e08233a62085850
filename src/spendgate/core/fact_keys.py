"""The KEYS of a fact, from its arguments by name: a spooled fact stores only
those (:mod:`spendgate.durability.replay` rebuilds its call), and the calls
that make a fact the first time build theirs here too where its keys depend
on more than one argument (a team refund's). Every key comes from
:class:`spendgate.core.keys.Keys`."""

from __future__ import annotations

from collections.abc import Mapping

from spendgate.core.keys import Keys
from spendgate.errors import StorageError


def fact_keys(
    keys: Keys, operation: str, args: Mapping[str, str | int]
) -> tuple[str, ...]:
    """The KEYS of a fact operation, from its named arguments: a record,
    credit or refund is keyed by the caller's idempotency key, or by its
    entry id when it was given none (an adjust too); a settle by its lease;
    a team's, then by the team's keys.

    :raise ValueError: ``operation`` is not a fact
    :raise KeyError: an argument the keys are made of is missing
    """
    if operation == "settle":
        lease = str(args["lease"])
        return (keys.of_id(lease).hold(lease),)
    if operation == "team_settle":
        team = str(args["team"])
        team_keys = keys.team_keys(team, str(args["day"]), str(args["month"]))
        return (keys.hold(str(args["lease"])), *team_keys)
    if operation not in (
        "record",
        "credit",
        "refund",
        "adjust",
        "team_record",
        "team_credit",
        "team_refund",
    ):
        raise ValueError(f"not a fact operation: {operation!r}")
    key, entry = str(args["idempotency_key"]), str(args["entry"])
    bucket = keys.of_id(entry)  # (a fact's entry id names its bucket)
    first = (
        bucket.caller_idempotency(key) if key else bucket.generated_idempotency(entry)
    )
    if operation in ("record", "credit", "refund", "adjust"):
        return (first,)
    team = str(args["team"])
    if operation == "team_credit":
        return (first, keys.team(team))
    if operation == "team_refund":
        return team_refund_keys(keys, first, team, str(args["day"]))
    return (first, *keys.team_keys(team, str(args["day"]), str(args["month"])))


def team_refund_keys(keys: Keys, first: str, team: str, day: str) -> tuple[str, ...]:
    """A team refund's KEYS (``lua/team_refund.lua``): ``first`` (its
    idempotency record), the team, and its members' day and month of the
    charge's ``day`` (``yyyymmdd``)."""
    team_keys = keys.team_keys(team, day, day[:6])
    return (first, team_keys[0], team_keys[4], team_keys[5])


def forward_value(bucket: int, run: str) -> str:
    """What a rebucketing's forward holds (``K_FORWARD``, answered by
    ``{MOVED, ...}``): ``"<bucket>:<run>"``, the bucket the record moved to
    and the run that moved it (:func:`moved_home` reads it)."""
    return f"{bucket}:{run}"


def read_forward(value: object) -> tuple[str, str]:
    """The bucket and the run a forward's value (:func:`forward_value`)
    names, as text."""
    text = value.decode() if isinstance(value, bytes) else str(value)
    bucket, _, run = text.partition(":")
    return bucket, run


def moved_home(keys: Keys, moved: object) -> Keys:
    """The bucket a rebucketing moved a record to, from a ``{MOVED,
    forward_value}`` reply.

    :raise StorageError: the bucket is not one of this deployment's
    """
    number = read_forward(moved)[0]
    homes = keys.buckets()
    if not number.isdigit() or int(number) >= len(homes):
        raise StorageError(f"a record moved to an unknown bucket {number!r}")
    return homes[int(number)]


def moved_key(keys: Keys, moved: object, key: str, entry: str) -> str:
    """A refund's first key (its idempotency record) in the bucket a
    rebucketing moved the charge's record to (:func:`moved_home`)."""
    home = moved_home(keys, moved)
    return home.caller_idempotency(key) if key else home.generated_idempotency(entry)
