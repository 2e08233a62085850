"""Money invariants across random sequences of operations.

A hypothesis state machine drives a BudgetManager (real Redis and fakeredis)
through random add_credits (with and without expiry and priority),
record_spend, deduct, reserve and reserve_up_to / settle (below, at, above
the estimate, at zero) / release, refunds (partial and full, of spends,
deducts and settles, own and team ones), adjust_usage (also of yesterday),
teams (create, credit, members, team record / deduct / reserve), clock
advances (and the sweep of the grants they expired, also as a dry run),
and through idempotent replays of each keyed call (the same call again, its
amount also in another equal form): a replay must return the first answer
and change nothing in the store, and the same key with other arguments
must raise IdempotencyConflictError and change nothing; a refusal (a cap,
the balance, the pool, a member's cap, not a member, no such team, a refund
above what is left, a settle after release...) must raise its typed error
and change no key. Each step is applied to the exact model of
tests/money_model.py; after every step get_balance (total, held, available,
every grant), get_usage (user, project and global spent and held, the
user's limits and what remains, the balance) and get_team (pool, held, each
member's caps, spending and held) must equal the model. The suite runs a
few short sequences; to hunt, ``SPENDGATE_MONEY_EXAMPLES=300
SPENDGATE_MONEY_STEPS=50`` (and ``SPENDGATE_MONEY_SHRINK=1`` to shrink a
failure) with ``--timeout=0``.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from conftest import real_redis_available, service_missing
from money_machine import MoneyMachineBase
from money_rules import ChargeRules
from money_team_rules import TeamRules


class MoneyMachine(ChargeRules, TeamRules, MoneyMachineBase):
    backend = "fakeredis"


class RedisMoneyMachine(MoneyMachine):
    backend = "redis"


_HUNT = int(os.environ.get("SPENDGATE_MONEY_EXAMPLES", "0"))
_SETTINGS = settings(
    max_examples=_HUNT or 4,
    stateful_step_count=int(os.environ.get("SPENDGATE_MONEY_STEPS", "20")),
    deadline=None,
    # (no shrinking by default: each step makes several store calls; the
    # unshrunk sequence is printed)
    phases=[Phase.explicit, Phase.reuse, Phase.generate]
    + ([Phase.shrink] if os.environ.get("SPENDGATE_MONEY_SHRINK") else []),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_money_agrees_on_fakeredis() -> None:
    run_state_machine_as_test(MoneyMachine, settings=_SETTINGS)


@pytest.mark.redis
def test_money_agrees_on_real_redis() -> None:
    reason = real_redis_available()
    if reason:
        service_missing("Redis", reason)
    run_state_machine_as_test(RedisMoneyMachine, settings=_SETTINGS)
