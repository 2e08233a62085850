"""The core contract on a Redis Cluster, through a master that does not own
the keys.

The behavioural tests of the core modules below run again here, unchanged,
on the ``cluster`` backend: each manager is made with ``redis_cluster=True``
and ``redis_url`` naming a master of the session's 3-master test cluster
(tests/redis_cluster.py) that does not own spendgate's slot, so every call
is routed by the client to the master that does. Admission, caps and their
overrides, leases (reserve, settle, release, expiry), facts (record,
credit), deduct, price books, usage, teams (their refunds too) and
idempotency are all covered, with the concurrency tests (hundreds of calls
at one cap). Each test keeps its
name, prefixed by its module's.

Left out, with the reason: tests that count or wrap the commands of one
``redis.asyncio.Redis`` client (the cluster's calls go through each node's
own), or that start servers of their own.
"""

from __future__ import annotations

import inspect
from types import ModuleType

import pytest

import test_core_admission
import test_core_concurrency
import test_core_input
import test_core_leases
import test_core_windows_money
import test_deduct
import test_price_books
import test_reserve_up_to
import test_teams
import test_teams_concurrency
import test_teams_refunds

pytest_plugins = ("pg_fixtures",)

#: the fixtures a borrowed test may take (those of conftest.py, pytest's,
#: Postgres's of pg_fixtures.py)
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
}

#: tests that cannot run on a cluster as they are, and why
_LEFT_OUT = {
    # reads one Redis's state across processes with a client of its own
    "test_an_activation_reaches_another_process": "a subprocess on 6379",
    # the embedded store's own burst, no backend
    "test_the_embedded_store_takes_a_burst_above_a_hundred_calls": "embedded only",
    # parametrized to the plain Redis (with Postgres)
    "test_the_refunds_ledger_rows_name_the_team": "the plain Redis only",
}

_MODULES: tuple[ModuleType, ...] = (
    test_core_admission,
    test_core_concurrency,
    test_core_input,
    test_core_leases,
    test_core_windows_money,
    test_deduct,
    test_price_books,
    test_reserve_up_to,
    test_teams,
    test_teams_concurrency,
    test_teams_refunds,
)


def _borrow(module: ModuleType) -> None:
    short = module.__name__.removeprefix("test_")
    for name, test in vars(module).items():
        if not name.startswith("test_") or not inspect.iscoroutinefunction(test):
            continue
        if name in _LEFT_OUT:
            continue
        if not set(inspect.signature(test).parameters) <= _FIXTURES | _params(test):
            continue  # takes a fixture of its own module
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


for _module in _MODULES:
    _borrow(_module)


@pytest.fixture(params=[pytest.param("cluster", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> str:
    """Only the cluster here: the other backends run these tests in their
    own modules."""
    return str(request.param)
