"""The core contract on a sharded keyspace: every user's keys in a bucket of
its own (``cluster_buckets``), on one Redis and on a Redis Cluster.

The behavioural tests of the modules below run again here, unchanged, on
two backends of conftest.py: ``sharded`` (the real Redis on the machine,
``cluster_buckets=8``) and ``sharded-cluster`` (the session's 3-master test
cluster, ``redis_cluster=True`` through a master that does not own the
root's slot, ``cluster_buckets=16``, so the buckets sit on every master).
Admission and user caps, leases (reserve, settle, release, extend, expiry),
facts (record, credit, adjust), deduct, refunds, grants and their sweep,
plans and allowances, features, price books, per-minute and per-model caps,
cap actions, usage and transactions are covered, with the concurrency tests
(hundreds of calls at one cap). Each test keeps its name, prefixed by its
module's. Where a borrowed test reads Redis itself it goes through
``keys.of(user)`` or every bucket's streams (conftest.py's
``stream_entries`` and ``deployment_keys``), which on one bucket are the
keys it always read.

What a sharded deployment cannot do is left out by name, below, each with
its reason, rather than skipped when it fails: project and global caps and
teams (refused: no bucket sees a project's, the platform's or a team's
whole spend), and the few tests whose premise is one bucket. A
parametrized test that fits for some of its cases runs those
(``_CASES_LEFT_OUT``). Two rules leave out what would only repeat another
module's run: a test that names its own backends (``parametrize("backend",
...)``), and one that takes no fixture of the backend's.

This run: 351 tests on each backend, 702 in all (and the check of the
lists below).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

import test_adjust
import test_allowance
import test_allowance_extend
import test_cap_actions
import test_core_admission
import test_core_concurrency
import test_core_input
import test_core_leases
import test_core_windows_money
import test_deduct
import test_extend
import test_features
import test_grants
import test_model_caps
import test_plans
import test_price_books
import test_refunds
import test_reserve_up_to
import test_transactions
import test_velocity
import test_velocity_keys
from test_model_caps import capped  # noqa: F401  (its tests' fixture)

pytest_plugins = ("pg_fixtures",)

#: the fixtures a borrowed test may take (those of conftest.py, pytest's,
#: Postgres's of pg_fixtures.py, test_model_caps.py's ``capped``)
_FIXTURES = {
    "budget",
    "make_budget",
    "clock",
    "redis_client",
    "key_prefix",
    "backend",
    "tmp_path",
    "monkeypatch",
    "ledger_dsn",
    "capped",
}

#: the fixtures that make a test run on the backend
_ON_THE_BACKEND = {"budget", "make_budget", "redis_client", "key_prefix", "capped"}

_MODULES: tuple[ModuleType, ...] = (
    test_adjust,
    test_allowance,
    test_allowance_extend,
    test_cap_actions,
    test_core_admission,
    test_core_concurrency,
    test_core_input,
    test_core_leases,
    test_core_windows_money,
    test_deduct,
    test_extend,
    test_features,
    test_grants,
    test_model_caps,
    test_plans,
    test_price_books,
    test_refunds,
    test_reserve_up_to,
    test_transactions,
    test_velocity,
    test_velocity_keys,
)

# -- what cannot run sharded, and why ---------------------------------------------

_CAPS = (
    "sets a project's or the global weekly, per-minute or per-model cap,"
    " which a sharded deployment refuses (BudgetConfig: ValidationError;"
    " set_limits: ConfigurationError)"
)
_SHARED_ACTIONS = (
    "sets a cap action on a project or the platform, which a sharded deployment"
    " refuses: no bucket sees the whole spend to warn at its thresholds"
)
_BUCKET_ROOM = (
    "reads the room under a project's cap (remaining, reserve_up_to's grant):"
    " sharded, it is what the user's bucket holds of the cap, borrowing only"
    " when that is short of the floor (test_escrow_admission.py)"
)
_REFUSAL_DETAIL = (
    "reads a project's refusal's held: sharded, the user's bucket's, and the"
    " others' holds count in spent (spendgate.ops.escrow_admission)"
)
_BORROWS = (
    "expects a refused call to change no key: sharded, a call short of a"
    " shared cap borrows (and takes back) before it is refused"
)
_OVERRIDE_COPIES = (
    "reads a project's override below the root: sharded, every bucket keeps a"
    " copy (test_escrow_admission.py)"
)
_TEAMS = "makes a team, which a sharded deployment refuses (ConfigurationError)"
_KEY_OF_ANOTHER = (
    "reuses an idempotency key for another user and expects a conflict: each"
    " bucket keeps its own keys, so a user of another bucket makes a call of"
    " its own (test_shards.py checks both sides)"
)
_PURGE = (
    "has another user's call purge an expired hold: a call purges its own"
    " bucket's holds only"
)
_ROOT = "lists the keys below the root's base, which holds no user's keys sharded"
_NO_BUCKET = (
    "replays a fact built by hand whose entry id names no bucket (it lands in"
    " the root's keys, not the user's)"
)
_SHARED_ADJUST = (
    "adjusts a project's and the platform's spend, which a sharded deployment"
    " refuses (it is the sum of every bucket's counters: test_shards.py)"
)

#: tests that cannot run sharded as they are, and why
_LEFT_OUT = {
    # test_core_admission
    "test_cleared_overrides_leave_no_key": _OVERRIDE_COPIES,
    "test_remaining_reports_the_tightest_room": _BUCKET_ROOM,
    # test_core_concurrency, test_core_input, test_core_leases
    "test_hold_counts_against_every_scope": _REFUSAL_DETAIL,
    "test_credit_idempotency": _KEY_OF_ANOTHER,
    "test_finished_hold_records_expire_after_the_idempotency_ttl": _PURGE,
    # test_core_windows_money, test_extend, test_reserve_up_to
    "test_a_refused_extend_changes_no_key": _BORROWS,
    "test_the_grant_is_the_ceiling_or_the_tightest_room": _BUCKET_ROOM,
    # test_cap_actions
    "test_an_action_is_stored_with_the_limits_and_shown": _SHARED_ACTIONS,
    "test_notify_admits_and_writes_events_its_results_say_nothing": _SHARED_ACTIONS,
    "test_one_charge_past_several_thresholds_writes_each": _SHARED_ACTIONS,
    "test_usage_shows_each_scopes_action": _SHARED_ACTIONS,
    # test_model_caps
    "test_200_concurrent_reserves_admit_exactly_the_model_cap": _CAPS,
    # test_velocity, test_velocity_keys
    "test_the_global_minute_is_shared_by_every_user": _CAPS,
    "test_the_kill_switch_refuses_for_its_time_and_writes_one_event": _CAPS,
    "test_a_per_minute_cap_keeps_a_minute_only_where_it_applies": _ROOT,
    "test_unconfigured_deployments_write_the_same_keys_as_before": _ROOT,
    # test_deduct
    "test_a_key_reused_for_another_model_is_a_conflict": _TEAMS,
    "test_a_team_that_does_not_exist_is_refused": _TEAMS,
    "test_a_usages_model_is_checked_on_a_teams_pool": _TEAMS,
    "test_a_team_deduct_replayed_after_an_activation_answers_the_first": _TEAMS,
    # test_adjust, test_allowance, test_price_books, test_transactions
    "test_up_and_down_per_scope_and_window": _SHARED_ADJUST,
    "test_post_v1_adjust": _SHARED_ADJUST,
    "test_a_spooled_fact_replays_leniently": _NO_BUCKET,
}


def _names_a_shared_scope(case: Any) -> bool:
    """A case of test_core_admission's CAPS or test_model_caps's scopes
    that caps a project or the platform."""
    scope = case[0] if isinstance(case, tuple) else case
    return scope in ("project", "global")


def _names_another_user(case: Any) -> bool:
    return isinstance(case, dict) and "user_id" in case


#: parametrized tests that run sharded for some of their cases: which cases
#: are left out, and why
_CASES_LEFT_OUT: dict[str, tuple[Callable[[Any], bool], str]] = {
    "test_each_scope_caps_the_model": (_names_a_shared_scope, _CAPS),
    "test_replay_with_different_arguments_conflicts": (
        _names_another_user,
        _KEY_OF_ANOTHER,
    ),
}


def _borrow(module: ModuleType) -> None:
    short = module.__name__.removeprefix("test_")
    for name, test in vars(module).items():
        if not name.startswith("test_") or not inspect.iscoroutinefunction(test):
            continue
        if name in _LEFT_OUT:
            continue
        params, takes = _params(test), set(inspect.signature(test).parameters)
        if "backend" in params:
            continue  # names the backends it runs on itself
        if not takes & _ON_THE_BACKEND:
            continue  # the same on every backend: its own module runs it
        if not takes <= _FIXTURES | params:
            continue  # takes a fixture of its own module
        if name in _CASES_LEFT_OUT:
            test = _some_cases(test, *_CASES_LEFT_OUT[name])
        globals()[f"test_{short}__{name.removeprefix('test_')}"] = test


def _params(test: object) -> set[str]:
    names: set[str] = set()
    for mark in getattr(test, "pytestmark", []):
        if mark.name == "parametrize":
            spec = mark.args[0]
            if isinstance(spec, str):
                spec = spec.split(",")
            names.update(str(n).strip() for n in spec)
    return names


def _some_cases(test: Any, left_out: Callable[[Any], bool], why: str) -> Any:
    """``test`` with the cases of its one parametrize mark that ``left_out``
    names taken out (the test runs once per remaining case)."""

    @functools.wraps(test)
    async def some(*args: Any, **kwargs: Any) -> None:
        await test(*args, **kwargs)

    marks = []
    for mark in test.pytestmark:
        if mark.name == "parametrize":
            names, cases = mark.args
            kept = [case for case in cases if not left_out(case)]
            assert 0 < len(kept) < len(cases), f"{test.__name__}: {why}"
            mark = pytest.mark.parametrize(names, kept).mark
        marks.append(mark)
    some.pytestmark = marks  # type: ignore[attr-defined]
    return some


for _module in _MODULES:
    _borrow(_module)


def test_every_test_left_out_is_one_of_the_borrowed() -> None:
    """A name in the lists that no module has any more would leave nothing
    out: the lists say what is left out, no more."""
    borrowed = {name for module in _MODULES for name in vars(module)}
    assert set(_LEFT_OUT) - borrowed == set()
    assert set(_CASES_LEFT_OUT) - borrowed == set()


@pytest.fixture(
    params=[
        pytest.param("sharded", marks=pytest.mark.redis),
        pytest.param("sharded-cluster", marks=pytest.mark.redis),
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    """Only the sharded backends here: the others run these tests in their
    own modules (and test_cluster_core.py)."""
    return str(request.param)
