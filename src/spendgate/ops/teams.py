"""Teams: a shared pool, members with their own caps on it.

``create_team``, ``add_team_member``, ``remove_team_member``, ``get_team``
and ``credit_team`` (the pool is topped up like a user's balance, with a
ledger entry naming the team). Charging a team is ``team_id=`` on
``reserve``, ``reserve_up_to`` (:mod:`spendgate.ops.team_leases`),
``record_spend`` and ``deduct`` (:mod:`spendgate.ops.team_charges`). Each
call is one script, one round trip
(``lua/team_*.lua``).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from spendgate.core.ids import check_id, encode_metadata, user_id_of
from spendgate.core.money import credit_micros, from_micros, limit_micros
from spendgate.core.protocol import NO_CAP, Reply
from spendgate.core.windows import from_ms
from spendgate.errors import (
    IdempotencyConflictError,
    InvalidArgumentError,
    NotATeamMemberError,
    TeamExistsError,
    TeamNotFoundError,
)
from spendgate.models import SpendRecord
from spendgate.ops.base import fingerprint, new_id, text
from spendgate.ops.facts import Facts
from spendgate.pricing.book import NAME_MAX
from spendgate.teams import TEAM_LEASE_MARK, Team, TeamMember

#: the longest role name accepted, in characters
MAX_ROLE_LENGTH = 64


class Teams(Facts):
    """The teams' own calls (their holds and charges:
    :mod:`spendgate.ops.team_leases`, :mod:`spendgate.ops.team_charges`)."""

    def _team_id(self, team_id: object) -> str:
        # (every team call names its team)
        self._decided_in_one_bucket(
            "teams cannot be kept", "a team's pool is shared by users of every bucket"
        )
        return check_id("team_id", team_id, self._max_id)

    async def create_team(
        self, team_id: str, name: str | None = None, initial_balance: Any = 0
    ) -> Team:
        """Make a team with its shared pool at ``initial_balance`` (a
        ``grant`` ledger entry naming the team records it, when above 0).

        :param team_id: an id, checked like a user id
        :param name: a display name (``""`` or ``None``: none)
        :raise TeamExistsError: a team of that id exists (it is left as it is;
            top its pool up with :meth:`credit_team`)
        :raise InvalidAmountError: ``initial_balance`` is not a valid amount
        """
        team = self._team_id(team_id)
        if name is not None and not isinstance(name, str):
            raise InvalidArgumentError(f"name must be a str, not {type(name).__name__}")
        if name:  # (a plan's name's rule: at most NAME_MAX characters, encodable)
            name = check_id("name", name, NAME_MAX)
        balance = credit_micros(initial_balance)
        now_ms = self._now_ms()
        reply = await self._store.run(
            "team_create",
            (self.keys.team(team),),
            (now_ms, team, name or "", balance, new_id(now_ms)),
        )
        if reply[0] == Reply.TEAM_EXISTS:
            raise TeamExistsError(team)
        return Team(team, name or None, from_ms(now_ms), from_micros(balance), _ZERO)

    async def add_team_member(
        self,
        team_id: str,
        user_id: Any,
        role: str = "member",
        daily_cap: Any = None,
        monthly_cap: Any = None,
    ) -> bool:
        """Add ``user_id`` to the team, or change a member's role and caps
        (effective on their next charge). A member's caps bound what they
        spend on the team's pool per day and month (``None``: no cap); the
        user's own caps hold as well.

        :return: ``True`` for a new member, ``False`` for one updated
        :raise TeamNotFoundError: no such team
        """
        team = self._team_id(team_id)
        user = user_id_of(user_id, self._max_id)
        role = check_id("role", role, MAX_ROLE_LENGTH)
        if "|" in role:
            raise InvalidArgumentError("role may not contain '|'")
        member = f"{role}|{_cap(daily_cap)}|{_cap(monthly_cap)}"
        reply = await self._store.run(
            "team_member_set",
            (self.keys.team(team), self.keys.team_members(team)),
            (user, member),
        )
        if reply[0] == Reply.UNKNOWN_TEAM:
            raise TeamNotFoundError(team)
        return bool(reply[1])

    async def remove_team_member(self, team_id: str, user_id: Any) -> None:
        """Take ``user_id`` out of the team: their next charge on its pool is
        refused (holds they took before are still settled or released).

        :raise NotATeamMemberError: they were not a member
        :raise TeamNotFoundError: no such team
        """
        team = self._team_id(team_id)
        user = user_id_of(user_id, self._max_id)
        reply = await self._store.run(
            "team_member_remove",
            (self.keys.team(team), self.keys.team_members(team)),
            (user,),
        )
        _raise_for_team(reply[0], team, user)

    async def get_team(self, team_id: str) -> Team:
        """The team: its pool's balance and held amount, and each member's
        role, caps and spending on the pool today and this month.

        :raise TeamNotFoundError: no such team
        """
        team = self._team_id(team_id)
        now_ms = self._now_ms()
        w = self._windows_at(now_ms)
        reply = await self._store.run(
            "team_get", self.keys.team_keys(team, w.day, w.month), (now_ms,)
        )
        if reply[0] == Reply.UNKNOWN_TEAM:
            raise TeamNotFoundError(team)
        (name, created, balance, held), members, helds, days, months = reply[1:]
        held_by, day, month = _pairs(helds), _pairs(days), _pairs(months)
        roster = {}
        for user, value in _pairs(members).items():
            role, daily, monthly = value.split("|")
            roster[user] = TeamMember(
                user,
                role,
                _cap_of(daily),
                _cap_of(monthly),
                from_micros(int(day.get(user, 0))),
                from_micros(int(month.get(user, 0))),
                from_micros(int(held_by.get(user, 0))),
            )
        return Team(
            team,
            text(name) or None,
            from_ms(int(created)),
            from_micros(int(balance)),
            from_micros(int(held or 0)),
            roster,
        )

    async def credit_team(
        self,
        team_id: str,
        amount: Any,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> SpendRecord:
        """Add credits to the team's pool: a fact (a ``grant`` ledger entry
        naming the team, no user), idempotent, spooled while Redis is away.

        :return: the record; ``.balance`` is the pool's balance after
            (``None`` when spooled), ``.user_id`` is ``""``
        :raise TeamNotFoundError: no such team
        :raise IdempotencyConflictError: a key reused with other arguments
        """
        team = self._team_id(team_id)
        micros = credit_micros(amount)
        if micros <= 0:
            raise InvalidArgumentError("a team credit must be above 0")
        meta = "" if metadata is None else encode_metadata(metadata, self._max_meta)
        now_ms = self._now_ms()
        entry_id = new_id(now_ms)
        key, ikey = self._idempotency(idempotency_key, entry_id)
        digest = fingerprint("team_credit", team, micros, meta) if key else ""
        args = (now_ms, micros, digest, entry_id, meta, key, team)
        info = {"kind": "team_credit", "entry": entry_id, "team": team}
        reply = await self._store.run(
            "team_credit", (ikey, self.keys.team(team)), args, spool_info=info.copy
        )
        balance, replayed, occurred = None, False, now_ms
        if reply is not None:
            code = reply[0]
            if code == Reply.UNKNOWN_TEAM:
                raise TeamNotFoundError(team)
            if code == Reply.CONFLICT:
                raise IdempotencyConflictError(key)
            replayed = code == Reply.REPLAYED
            entry_id, first_ms, after = text(reply[1]).split("|")
            occurred, balance = int(first_ms), from_micros(int(after))
        return SpendRecord(
            entry_id,
            "grant",
            "",
            None,
            micros,
            None,
            occurred,
            replayed,
            False,
            reply is None,
            balance=balance,
            team_id=team,
        )


_ZERO = Decimal(0)


def _cap(value: Any) -> str:
    """A member's cap as the scripts read it: micro-units, -1 for none."""
    return NO_CAP if value is None else str(limit_micros(value))


def _cap_of(value: str) -> Decimal | None:
    return None if value == NO_CAP else from_micros(int(value))


def _pairs(flat: list[Any]) -> dict[str, str]:
    """HGETALL's flat answer as a mapping of text."""
    return {text(flat[i]): text(flat[i + 1]) for i in range(0, len(flat), 2)}


def team_scoped_id(now_ms: int, team: str) -> str:
    """A fresh id that names its team, ``"<id>.<team id>"``: a team lease's,
    or a team charge's entry id (``spendgate.teams.team_of_lease``,
    ``team_of_charge``), so a settle, a release or a refund finds the team
    by the id alone."""
    return new_id(now_ms) + TEAM_LEASE_MARK + team


def _raise_for_team(code: int, team: str, user: str) -> None:
    """The team's refusals: no such team, not a member."""
    if code == Reply.UNKNOWN_TEAM:
        raise TeamNotFoundError(team)
    if code == Reply.NOT_A_MEMBER:
        raise NotATeamMemberError(team, user)
