"""A project's and the platform's day and month counters across a
rebucketing (:class:`SharedCounters`).

Sharded, no one counter holds such a scope's spend: each bucket counts its
own users' part, and admits against what escrow's root lent it. A
rebucketing adds the old homes' counters of a window up (the total) and
splits it over the new layout's homes so that a refund of a charge made
before still finds its amount in its user's new bucket (a refund lowers
the counter of the charge's user's bucket, never below zero): each bucket
gets what its users' refundable charges of that window left (their refund
records say: user, project, day, amount, refunded), and the first bucket
(the root, with one bucket) the rest. Escrow is rebuilt to match: each
bucket's allowance is what it counts, the root lent the total, nothing
stranded.

The split of each counter is written first, to the root's ``rb:<run>:
<counter>`` (``KEY_PARTS["MERGED"]``), and every write after it is taken
from there: a run stopped half way, run again, writes the same values
(the old homes' counters it read may be gone by then).
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from spendgate.core.escrow_keys import loans
from spendgate.core.keys import KEY_PARTS, SCOPE_LETTERS, Keys
from spendgate.ops.base import text
from spendgate.rebucket.layout import Layouts

__all__ = ["Charge", "SharedCounters"]

_SCOPE_OF = {letter: scope for scope, letter in SCOPE_LETTERS.items()}
_PROJECT, _GLOBAL = SCOPE_LETTERS["project"], SCOPE_LETTERS["global"]


class Charge:
    """A charge's refund record (lua/_refunds.lua's refund_record:
    "<refunded>|<amount>|<day>|<draws>|<#user>|<#project>|<user><project>
    <model>", lengths in bytes), as far as a rebucketing reads it."""

    __slots__ = ("day", "left", "project", "user")

    def __init__(self, record: bytes) -> None:
        refunded, amount, day, _, users, projects, rest = record.split(b"|", 6)
        cut = int(users)
        self.user = rest[:cut].decode()
        self.project = rest[cut : cut + int(projects)].decode()
        self.day = day.decode()
        #: what refunds may still take back of it
        self.left = int(amount) - int(refunded)


class SharedCounters:
    """The shared counters one pass found, and the charges that split them."""

    def __init__(self, redis: Any, at: Layouts, run: str, dry_run: bool) -> None:
        self.redis, self.at, self.run, self.dry = redis, at, run, dry_run
        #: the counters (their name below a home's base) found
        self.groups: set[str] = set()
        #: counter -> the new home's base -> its users' refundable charges
        self._owed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))

    def found(self, rest: str) -> None:
        self.groups.add(rest)

    def charged(self, charge: Charge, home: Keys) -> None:
        """A charge of a user whose new home is ``home``."""
        if charge.left <= 0:
            return
        day, month = charge.day, charge.day[:6]
        scopes = [(_GLOBAL, "")]
        if charge.project:
            scopes.append((_PROJECT, charge.project))
        for letter, scope_id in scopes:
            for part, window in ((KEY_PARTS["DAY"], day), (KEY_PARTS["MONTH"], month)):
                counter = f"{part}{window}:{letter}:{scope_id}"
                self._owed[counter][home.base] += charge.left

    async def merge_all(self) -> int:
        """Every counter found, split and written; how many."""
        for rest in sorted(self.groups):
            if not self.dry:
                await self._merge(rest)
        return len(self.groups)

    async def _merge(self, rest: str) -> None:
        split, ttl = await self._split(rest)
        part, window, letter, scope_id = rest.split(":", 3)
        scope = _SCOPE_OF[letter]
        # (escrow lends a day's and a month's caps, sharded: a week's or a
        # model's counter is added up only going back to one bucket)
        escrow = f"{part}:" in (KEY_PARTS["DAY"], KEY_PARTS["MONTH"])
        sharded = self.at.to_buckets > 1
        homes = {h.base: h for h in (*self.at.old_homes(), *self.at.new_homes())}
        for base, home in homes.items():
            amount = split.get(base, 0)
            counter, lent = base + rest, loans(home, scope, scope_id, window)
            if escrow and (base != self.at.root.base or not sharded):
                await self.redis.delete(lent)
            if not amount:
                await self.redis.delete(counter)
                continue
            await self.redis.set(counter, amount, px=ttl or None)
            if escrow and sharded:
                await self.redis.hset(lent, "allowance", amount)
                if ttl:
                    await self.redis.pexpire(lent, ttl)
        if escrow and sharded:
            root_lent = loans(self.at.root, scope, scope_id, window)
            await self.redis.delete(root_lent)
            if total := sum(split.values()):
                await self.redis.hset(root_lent, "lent", total)
                if ttl:
                    await self.redis.pexpire(root_lent, ttl)

    async def _split(self, rest: str) -> tuple[dict[str, int], int]:
        """The counter's split over the new homes and its time to live (ms,
        0: none): this run's, written before anything else of it."""
        plan_key = f"{self.at.root.base}{KEY_PARTS['MERGED']}{self.run}:{rest}"
        kept = await self.redis.get(plan_key)
        if kept is not None:
            plan = json.loads(text(kept))
            return plan["split"], plan["ttl"]
        total, ttl = 0, 0
        for home in self.at.old_homes():
            value = await self.redis.get(home.base + rest)
            if value is not None:
                total += int(text(value))
                ttl = max(ttl, await self.redis.pttl(home.base + rest))
        split: dict[str, int] = {}
        for base, owed in sorted(self._owed.get(rest, {}).items()):
            share = min(owed, total - sum(split.values()))
            if share > 0 and base != self.at.shared_home().base:
                split[base] = share
        first = self.at.shared_home().base
        split[first] = total - sum(split.values())
        ttl = max(ttl, 0)
        plan = json.dumps({"split": split, "ttl": ttl})
        await self.redis.set(plan_key, plan, px=ttl or None)
        return split, ttl
