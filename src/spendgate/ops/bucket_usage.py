"""A project's and the platform's usage on a sharded deployment: what every
bucket holds and spent of them, added up (:mod:`spendgate.core.shards`)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from spendgate.core.keys import Keys
    from spendgate.core.store import Store

#: what usage.lua reports of a scope that is every bucket's sum: held, spent
#: that day, month, week, minute (the order of LimitsAndUsage._scope_usage)
SHARED_USAGE = (0, 4, 5, 7, 9)
#: and of a model in it: spent that day, month, held (of _model_usage)
SHARED_MODEL_USAGE = (2, 3, 4)


async def with_other_buckets(
    store: Store,
    keys: Keys,
    own: Keys,
    call: tuple[str, tuple[Any, ...], Any],
    shape: tuple[int, int, bool],
) -> list[Any]:
    """usage.lua's reply from the user's bucket (``own``) with what every
    other bucket holds and spent of the project and the platform added in:
    the same script run in each bucket, keyed there, all at once.

    :param call: the user id, usage.lua's ARGV, and its reply in ``own``
    :param shape: the scopes reported (the user's first), the values of
        each (12, or 13 with cap actions), and whether a model's five values
        a scope follow them
    """
    user_id, args, reply = call
    scopes, width, model = shape
    others = [bucket for bucket in keys.buckets() if bucket is not own]
    replies = await asyncio.gather(
        *(store.run("usage", (bucket.balance(user_id),), args) for bucket in others)
    )
    fields = [i * width + n for i in range(1, scopes) for n in SHARED_USAGE]
    if model:
        fields += [
            scopes * width + i * 5 + n
            for i in range(1, scopes)
            for n in SHARED_MODEL_USAGE
        ]
    total = list(reply)
    for field in fields:
        total[field] = sum(int(r[field] or 0) for r in (reply, *replies))
    return total
