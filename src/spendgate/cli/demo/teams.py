"""Step 10: a team's shared pool with a member cap, and a per-model cap."""

from __future__ import annotations

from decimal import Decimal

from spendgate.cli.demo.say import say
from spendgate.errors import BudgetExceededError, NotATeamMemberError
from spendgate.manager import BudgetManager

#: the team, a member of it, and someone who is not
TEAM, ERIN, FRANK = "research", "erin", "frank"


async def pool_member_caps_and_models(budget: BudgetManager) -> None:
    """Step 10: team charges draw on the pool within the member's cap; a
    model's cap refuses that model only."""
    say("10. Teams and per-model caps: Research shares a pool of 10.00.")
    await budget.create_team(TEAM, name="Research", initial_balance=Decimal("10"))
    await budget.add_team_member(TEAM, ERIN, daily_cap=Decimal("0.50"))
    await budget.record_spend(ERIN, Decimal("0.40"), team_id=TEAM)
    try:
        await budget.reserve(ERIN, Decimal("0.20"), team_id=TEAM)
    except BudgetExceededError as refused:
        say(
            f"   Erin spent 0.40 of the pool; 0.20 more passes her member cap "
            f"of {refused.limit} a day ({refused.scope})"
        )
    else:
        raise AssertionError("the member cap did not refuse")
    team = await budget.get_team(TEAM)
    say(f"   the pool holds {team.balance}; Erin's own balance was not touched")
    try:
        await budget.record_spend(FRANK, Decimal("0.10"), team_id=TEAM)
    except NotATeamMemberError:
        say("   Frank is not a member: his charge on the pool is refused")
    else:
        raise AssertionError("a non-member charged the pool")
    await budget.set_limits("user", ERIN, model="gpt-4o", daily=Decimal("0.10"))
    try:
        await budget.check_availability(ERIN, None, Decimal("0.20"), model="gpt-4o")
    except BudgetExceededError as refused:
        mini = await budget.check_availability(
            ERIN, None, Decimal("0.20"), model="gpt-4o-mini"
        )
        say(
            f"   Erin's cap on {refused.model} ({refused.limit} a day) refuses "
            f"0.20 of it; gpt-4o-mini is {'admitted' if mini else 'refused'}\n"
        )
    else:
        raise AssertionError("the per-model cap did not refuse")
