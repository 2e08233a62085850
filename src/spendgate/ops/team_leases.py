"""Holds on a team's pool: ``team_id=`` on ``reserve`` and
``reserve_up_to``, and a team lease's ``settle`` and ``release``; and how a
team's refusal reads (shared with the team charges,
:mod:`spendgate.ops.team_charges`).

Each is its own script (``lua/team_*.lua``), so the calls without a team run
the scripts they always ran. In one round trip a hold checks the
membership, the user's own caps (and the project's and global caps; not the
user's balance: the pool pays), the member's caps on the team and the pool.

A team lease's id is ``"<id>.<team id>"``: settling or releasing it by id
alone finds its team.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from spendgate.core.ids import (
    check_id,
    check_model,
    check_optional_id,
    encode_metadata,
    user_id_of,
)
from spendgate.core.money import charge_micros, from_micros
from spendgate.core.protocol import WINDOW_NAMES, Reply, TeamScope
from spendgate.core.windows import Windows, from_ms
from spendgate.errors import (
    BudgetExceededError,
    IdempotencyConflictError,
    InvalidArgumentError,
    LeaseStateError,
)
from spendgate.models import Lease, SpendRecord
from spendgate.ops.base import fingerprint, text
from spendgate.ops.leases import Leases
from spendgate.ops.settle_replies import (
    UNKNOWN_LEASE,
    settled_record,
    spooled_settle_record,
)
from spendgate.ops.teams import Teams, _raise_for_team, team_scoped_id
from spendgate.teams import LEASE_ID_LENGTH

_REFUSED, _REPLAYED, _CONFLICT = (
    int(Reply.REFUSED),
    int(Reply.REPLAYED),
    int(Reply.CONFLICT),
)
_TEAM_REFUSALS = (int(Reply.NOT_A_MEMBER), int(Reply.UNKNOWN_TEAM))


class TeamLeases(Leases, Teams):
    """The team variants of the lease calls, which hand over to them when
    given a team (or a team lease)."""

    async def _team_reserve(
        self,
        user_id: Any,
        amount: Any,
        project_id: str | None,
        ttl_seconds: int | None,
        idempotency_key: str | None,
        team_id: str,
        most: Any = None,
        model: str | None = None,
    ) -> Lease:
        """``reserve`` (``most`` ``None``) or ``reserve_up_to`` (``amount``
        the least, ``most`` the most) on the team's pool; ``model``'s caps
        (with ``model_caps``) admit the hold too, as a hold without a team."""
        user = user_id_of(user_id, self._max_id)
        project = check_optional_id("project_id", project_id, self._max_id)
        team = self._team_id(team_id)
        requested = charge_micros(amount)
        ceiling = None if most is None else charge_micros(most)
        if ceiling is not None and requested > ceiling:
            raise InvalidArgumentError("min_amount is above max_amount")
        ttl_ms = self._lease_ttl_ms(ttl_seconds)
        tail = self._model_tail(model)
        now_ms = self._now_ms()
        lease_id = team_scoped_id(now_ms, team)
        ikey, digest = self.keys.hold(lease_id), ""  # no key: the hold's stands in
        if idempotency_key is not None:
            key = check_id("idempotency_key", idempotency_key, self._max_id)
            ikey = self.keys.caller_idempotency(key)
            digest = fingerprint(
                "team_reserve", user, project, requested, ceiling, ttl_ms, team
            )
            if model is not None:
                digest = fingerprint(digest, model)
        w = self._windows_at(now_ms)
        keys = (ikey, *self.keys.team_keys(team, w.day, w.month))
        args: tuple[Any, ...] = (
            now_ms,
            w.day,
            w.month,
            requested,
            user,
            project or "",
            digest,
            lease_id,
            now_ms + ttl_ms,
        )
        operation = "team_reserve"
        if ceiling is not None:
            operation, args = "team_reserve_up_to", (*args, ceiling)
        reply = await self._store.run(operation, keys, (*args, team, *tail))
        code = reply[0]
        if code == _REFUSED:
            raise self._team_refusal(reply, user, project, team, requested, w)
        if code == _CONFLICT:
            raise IdempotencyConflictError(idempotency_key or "")
        if code in _TEAM_REFUSALS:
            _raise_for_team(code, team, user)
        # (the lease id ends with the team id, which may hold "|")
        parts = text(reply[1]).rsplit("|", 1 if ceiling is None else 2)
        granted = int(parts[2]) if ceiling is not None else requested
        return Lease(
            parts[0],
            user,
            project,
            granted,
            int(parts[1]),
            code == _REPLAYED,
            team_id=team,
            model=model,
        )

    async def _team_settle(
        self,
        lease: Lease | str,
        lease_id: str,
        team: str,
        actual_cost: Any,
        model: str | None,
        metadata: Mapping[str, Any] | None,
    ) -> SpendRecord:
        """``settle`` of a team lease: the pool pays the actual cost."""
        lease_id = check_id("lease_id", lease_id, self._max_id + LEASE_ID_LENGTH + 1)
        amount = charge_micros(actual_cost)
        if model is None and isinstance(lease, Lease):
            model = lease.model
        model_name = None if model is None else check_model(model)
        meta = "" if metadata is None else encode_metadata(metadata, self._max_meta)
        now_ms = self._now_ms()
        entry_id = team_scoped_id(now_ms, team)
        head = self._fact_head(now_ms, amount)
        args = head + (entry_id, model_name or "", meta, lease_id, team)
        keys = (self.keys.hold(lease_id), *self.keys.team_keys(team, head[1], head[3]))
        reply = await self._store.run(
            "team_settle",
            keys,
            args,
            spool_info=lambda: {"kind": "settle", "entry": entry_id, "lease": lease_id},
        )
        if reply is None:
            record = spooled_settle_record(
                lease, lease_id, entry_id, amount, model_name, now_ms
            )
        else:
            record = settled_record(
                reply, lease_id, entry_id, amount, model_name, now_ms, team
            )
        record.team_id = team
        return record

    async def _team_release(self, lease_id: str, team: str) -> bool:
        """``release`` of a team lease."""
        lease_id = check_id("lease_id", lease_id, self._max_id + LEASE_ID_LENGTH + 1)
        team_keys = self.keys.team_keys(team, "", "")
        reply = await self._store.run(
            "team_release",
            (self.keys.hold(lease_id), team_keys[0], team_keys[2], team_keys[3]),
            (lease_id, team),
        )
        if reply[0] == Reply.UNKNOWN_LEASE:
            raise LeaseStateError(lease_id, UNKNOWN_LEASE, "release")
        if reply[0] == Reply.LEASE_SETTLED:
            raise LeaseStateError(lease_id, "settled", "release")
        return bool(reply[1])

    def _team_refusal(
        self,
        reply: list[Any],
        user: str,
        project: str | None,
        team: str,
        requested: int,
        w: Windows,
    ) -> BudgetExceededError:
        """A refusal of a team charge: by the team (its pool, or the
        member's caps on it), else by a scope as any admission's."""
        index = reply[1]
        if index not in (TeamScope.TEAM, TeamScope.MEMBER):
            return self._refusal(reply, user, project, requested, w)
        window_code, limit, spent, held = reply[2:6]
        window = WINDOW_NAMES[window_code]
        resets_at = None
        if window == "daily":
            resets_at = from_ms(w.day_end_ms)
        elif window == "monthly":
            resets_at = from_ms(w.month_end_ms)
        team_refused = index == TeamScope.TEAM
        return BudgetExceededError(
            scope="team" if team_refused else "team_member",
            scope_id=team if team_refused else user,
            window=window,
            limit=from_micros(limit),
            spent=from_micros(spent),
            requested=from_micros(requested),
            resets_at=resets_at,
            held=from_micros(held),
        )
