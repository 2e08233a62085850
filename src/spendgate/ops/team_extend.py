"""``extend`` of a team lease: a streamed call charged to a team's pool
tops its hold up as output accrues, as a lease of the user's own does.

Its own script (``lua/team_extend.lua``), one round trip: the hold's user
must still be a member, then ``more`` is admitted as a team reserve of that
amount would be (the user's own caps and the project's and global caps, the
model's at the hold's model with ``model_caps``, the member's caps on the
team, the pool), the hold's own amount counting as held. The pool pays, so
no plan argument is sent: the user's allowance plays no part, and nothing is
looked up by lease id first.
"""

from __future__ import annotations

from typing import Any

from spendgate.core.ids import check_id
from spendgate.core.protocol import Reply
from spendgate.models import Lease
from spendgate.ops.base import text
from spendgate.ops.extend import Extensions, extended, not_extended
from spendgate.ops.team_leases import TeamLeases
from spendgate.ops.teams import _raise_for_team
from spendgate.teams import LEASE_ID_LENGTH

_OK, _REFUSED, _REPLAYED = int(Reply.OK), int(Reply.REFUSED), int(Reply.REPLAYED)
_TEAM_REFUSALS = (int(Reply.NOT_A_MEMBER), int(Reply.UNKNOWN_TEAM))


class TeamExtensions(Extensions, TeamLeases):
    """``extend`` of a team lease, which ``extend`` hands over to."""

    async def _team_extend(
        self,
        lease: Lease | str,
        lease_id: str,
        team: str,
        more: Any,
        ttl_seconds: int | None,
        idempotency_key: str | None,
    ) -> Lease:
        """``extend`` of a lease on ``team``'s pool."""
        lease_id = check_id("lease_id", lease_id, self._max_id + LEASE_ID_LENGTH + 1)
        sent = self._extension(
            "team_extend", lease_id, more, ttl_seconds, idempotency_key
        )
        w = sent.windows
        keys = (*sent.keys, *self.keys.team_keys(team, w.day, w.month))
        reply = await self._store.run("team_extend", keys, (*sent.args, team))
        code = reply[0]
        if code == _REFUSED or code in _TEAM_REFUSALS:
            # (user and project come last, after a minute refusal's free_ms)
            user, project = text(reply[-2]), text(reply[-1]) or None
            if code != _REFUSED:
                _raise_for_team(code, team, user)
            requested = sent.args[3]
            raise self._team_refusal(reply[:-2], user, project, team, requested, w)
        if code not in (_OK, _REPLAYED):
            raise not_extended(code, lease_id, idempotency_key)
        return extended(lease, lease_id, reply, team)
