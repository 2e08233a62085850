"""What a sharded keyspace (``cluster_buckets=8``) does that one bucket does
not: where the keys go, ids that name their bucket, what it refuses, and
the sums across buckets.

How: budgets of the ``make_budget`` fixture (the real Redis and fakeredis)
with eight buckets and no project or global caps, and users picked by their
bucket (``crc32(user) % 8``, computed here as the library does). Checked:

- every key of a user's is below its bucket's tag ``{sg:<bucket>}``, none
  of a user's below the root's ``{sg}``, which keeps only the price books
  and the plans; 40 users fill at least 6 of the 8 buckets;
- lease and entry ids end in ``~<bucket>``; settle, release, extend and
  refund given only the id, by another manager, find it in every bucket;
  ids that name no bucket, a bucket out of range or the wrong bucket are
  a ``LeaseStateError`` / ``UnknownEntryError`` and change no key;
- project and global caps are refused (the default config, ``set_limits``
  and ``clear_limits``, with a model too) and so are teams, writing
  nothing; a user's caps work;
- ``get_usage`` reports a project's and the platform's spend and held
  summed over every bucket, a user's its own;
- a price book activated on one manager prices the next deduct of another
  in every bucket, and so does going back to an older version;
- an idempotency key replays in its user's bucket (a user of the same
  bucket meets a conflict, one of another bucket makes a call of its own);
- 200 concurrent reserves per user, for users in two buckets at once,
  admit exactly what each user's cap fits;
- facts spooled while Redis is down (a private redis-server, killed and
  started again) replay into their users' buckets exactly once: each
  bucket's counters and ledger stream hold exactly what callers were told.
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from conftest import FakeClock, MakeBudget, deployment_keys, deployment_state
from redis_server import RedisServer
from spendgate import (
    BudgetConfig,
    BudgetExceededError,
    BudgetManager,
    ConfigurationError,
    IdempotencyConflictError,
    Lease,
    LeaseStateError,
    UnknownEntryError,
)
from spendgate.core.shards import bucket_of, keys_for
from test_chaos import _config, _drained
from test_price_books import BOOK, PRICE, USAGE, _doubled

BUCKETS = 8
AMOUNT = Decimal("0.07")


def _sharded(make_budget: MakeBudget, **settings: Any) -> BudgetManager:
    return make_budget(cluster_buckets=BUCKETS, **settings)


def _one_per_bucket(name: str = "user") -> list[str]:
    """A user of each bucket, the user of bucket b at index b."""
    users: dict[int, str] = {}
    n = 0
    while len(users) < BUCKETS:
        users.setdefault(bucket_of(f"{name}-{n}", BUCKETS), f"{name}-{n}")
        n += 1
    return [users[b] for b in range(BUCKETS)]


# -- where the keys go -----------------------------------------------------------

_ROOT_PARTS = re.compile(r"pb:(next|active|v:\d+|m:\d+)|plans|plans:rev")


async def test_a_users_keys_are_all_in_its_buckets_tag(
    make_budget: MakeBudget, key_prefix: str
) -> None:
    budget = _sharded(make_budget, enforce_balance=True)
    await budget.publish_pricing(BOOK)
    await budget.set_plan("pro", free_allowance=1)
    users = [f"member-{i:02d}" for i in range(40)]
    for user in users:
        await budget.add_credits(user, 50, idempotency_key=f"topup-{user}")
        await budget.set_limits("user", user, daily=90)
        await budget.assign_plan(user, "pro")
        spent = await budget.record_spend(user, 2, project_id="p")
        await budget.refund(spent.entry_id, "0.5")
        await budget.settle(await budget.reserve(user, 3), 1)
        await budget.reserve(user, 1, project_id="p")  # left pending
        await budget.deduct(user, USAGE)
    assert len({bucket_of(user, BUCKETS) for user in users}) >= 6

    tagged = re.compile(rf"{key_prefix}:\{{sg(?::([0-7]))?\}}:(.*)")
    root, buckets = [], set()
    async for key in budget.redis.scan_iter(match=f"{key_prefix}:*", count=1000):
        found = tagged.fullmatch(key.decode())
        assert found is not None, key
        bucket, rest = found.groups()
        if bucket is None:
            root.append(rest)
            continue
        buckets.add(int(bucket))
        for user in re.findall(r"member-\d\d", rest):
            assert bucket_of(user, BUCKETS) == int(bucket), key
        for made_in in re.findall(r"~(\d+)$", rest):  # a hold, a charge's record
            assert int(made_in) == int(bucket), key
    assert all(_ROOT_PARTS.fullmatch(rest) for rest in root), root
    assert {"plans", "pb:active"} <= set(root)
    assert buckets == {bucket_of(user, BUCKETS) for user in users}
    for keys in budget.keys.buckets():  # each bucket's own pending holds
        for lease_id in await budget.redis.zrange(keys.holds, 0, -1):
            assert keys is budget.keys.of_id(lease_id.decode())


# -- ids that name their bucket ----------------------------------------------------


async def test_calls_given_only_an_id_find_it_in_every_bucket(
    make_budget: MakeBudget,
) -> None:
    budget = _sharded(make_budget, enforce_balance=True)
    other = _sharded(make_budget, enforce_balance=True)  # knows none of the ids
    for bucket, user in enumerate(_one_per_bucket()):
        mark = f"~{bucket}"
        await budget.add_credits(user, 100)
        lease = await budget.reserve(user, 5)
        dropped = await budget.reserve(user, 2)
        spent = await budget.record_spend(user, 3)
        assert lease.id.endswith(mark) and spent.entry_id.endswith(mark)
        assert (await other.extend(lease.id, 1)).amount == 6
        settled = await other.settle(lease.id, 4)
        assert settled.entry_id.endswith(mark)
        assert await other.release(dropped.id) is True
        refunded = await other.refund(spent.entry_id, 1)
        assert refunded.entry_id.endswith(mark) and refunded.refunded == 1
        usage = (await budget.get_usage(user))["user"]
        assert (usage.daily.spent, usage.held, usage.balance) == (6, 0, 94)


_HOSTILE: dict[str, Callable[[str, int], str]] = {
    "no mark": lambda base, b: base,
    "out of range": lambda base, b: f"{base}~999",
    "negative": lambda base, b: f"{base}~-1",
    "not a number": lambda base, b: f"{base}~abc",
    "mark alone": lambda base, b: "x~",
    "not ascii digits": lambda base, b: f"{base}~\uff13",
    "a leading zero": lambda base, b: f"{base}~0{b}",
    "another bucket": lambda base, b: f"{base}~{(b + 1) % BUCKETS}",
}


@pytest.mark.parametrize("form", list(_HOSTILE))
async def test_an_id_that_names_no_bucket_or_another_changes_nothing(
    make_budget: MakeBudget, form: str
) -> None:
    budget = _sharded(make_budget, enforce_balance=True)
    user = _one_per_bucket()[3]
    await budget.add_credits(user, 10)
    lease = await budget.reserve(user, 2)
    spent = await budget.record_spend(user, 1)
    before = await deployment_state(budget)
    bad_lease = _HOSTILE[form](lease.id.rsplit("~", 1)[0], 3)
    bad_entry = _HOSTILE[form](spent.entry_id.rsplit("~", 1)[0], 3)
    with pytest.raises(LeaseStateError, match="unknown"):
        await budget.settle(bad_lease, 1)
    with pytest.raises(LeaseStateError, match="unknown"):
        await budget.release(bad_lease)
    with pytest.raises(LeaseStateError, match="unknown"):
        await budget.extend(bad_lease, 1)
    with pytest.raises(UnknownEntryError):
        await budget.refund(bad_entry, "0.5")
    assert await deployment_state(budget) == before
    assert (await budget.get_usage(user))["user"].held == 2


# -- what a bucket cannot decide is refused ----------------------------------------


def test_weekly_and_per_minute_defaults_of_shared_scopes_are_refused() -> None:
    # (daily and monthly ones are lent to the buckets: test_escrow_admission.py)
    assert BudgetConfig(key_prefix="sharded", cluster_buckets=BUCKETS)
    for field in ("weekly_project_limit", "per_minute_global_limit"):
        with pytest.raises(ValidationError) as refused:
            BudgetConfig(key_prefix="s", cluster_buckets=BUCKETS, **{field: 5})
        assert field in str(refused.value)
    assert BudgetConfig(key_prefix="s", cluster_buckets=BUCKETS, weekly_user_limit=5)


async def test_what_no_bucket_can_decide_is_refused_and_writes_nothing(
    make_budget: MakeBudget,
) -> None:
    budget = _sharded(make_budget, model_caps=True, cap_actions=True, weekly_caps=True)
    refused = [
        budget.set_limits("project", "p", weekly=1),
        budget.set_limits("global", daily=1, action="warn"),
        budget.set_limits("project", "p", model="gpt-4o", daily=1),
        budget.set_limits("global", model="gpt-4o", daily=1),
        budget.clear_limits("project", "p", model="gpt-4o"),
        budget.create_team("eng", initial_balance=10),
        budget.record_spend("ada", 1, team_id="eng"),
    ]
    for call in refused:
        with pytest.raises(ConfigurationError, match="cluster_buckets=8"):
            await call
    assert await deployment_keys(budget) == []
    limits = await budget.set_limits("user", "ada", daily=5, weekly=6)
    assert (limits.daily, limits.weekly) == (5, 6)
    await budget.record_spend("ada", 4)
    with pytest.raises(BudgetExceededError) as over:
        await budget.reserve("ada", "1.01")
    assert (over.value.scope, over.value.window) == ("user", "daily")


async def test_a_projects_and_the_platforms_counters_are_not_adjusted(
    make_budget: MakeBudget,
) -> None:
    budget = _sharded(make_budget)
    await budget.record_spend("ada", 2, project_id="p")
    before = await budget.get_usage("ada", "p")
    for scope, scope_id in (("project", "p"), ("global", None)):
        for amount in ("1", "-1"):
            with pytest.raises(ConfigurationError, match="cluster_buckets=8"):
                await budget.adjust_usage(scope, scope_id, amount)  # type: ignore[arg-type]
    assert await budget.get_usage("ada", "p") == before
    lowered = await budget.adjust_usage("user", "ada", "-0.5", reason="refunded")
    assert (lowered.applied, lowered.spent_after) == (Decimal("-0.5"), Decimal("1.5"))
    usage = await budget.get_usage("ada", "p")
    assert usage["user"].daily.spent == Decimal("1.5")
    assert usage["project"].daily.spent == 2


def test_a_sharded_ledger_is_capped_as_an_unsharded_one() -> None:
    """The flusher drains every bucket's ledger: uncapped with a DSN, capped
    at 1,000,000 without one (nothing drains it), as with one bucket."""
    sharded = {"cluster_buckets": BUCKETS, "key_prefix": "capped"}
    sharded |= {"daily_project_limit": None, "daily_global_limit": None}
    dsn = "postgresql://127.0.0.1:5432/test"
    assert BudgetConfig(**sharded, postgres_dsn=dsn).effective_ledger_maxlen == 0
    assert BudgetConfig(**sharded).effective_ledger_maxlen == 1_000_000
    assert BudgetConfig(**sharded, ledger_maxlen=5).effective_ledger_maxlen == 5
    one = BudgetConfig(key_prefix="capped", postgres_dsn=dsn)
    assert one.effective_ledger_maxlen == 0
    assert BudgetConfig(key_prefix="capped").effective_ledger_maxlen == 1_000_000


# -- sums across buckets ------------------------------------------------------------


async def test_a_projects_and_the_platforms_usage_adds_up_every_bucket(
    make_budget: MakeBudget,
) -> None:
    budget = _sharded(make_budget)
    users = _one_per_bucket()
    for n, user in enumerate(users, start=1):
        await budget.record_spend(user, n, project_id="p")
        await budget.record_spend(user, "0.5")  # the platform's, no project
        await budget.record_spend(user, 100, project_id="other")
        await budget.reserve(user, Decimal(n) / 10, project_id="p")
    in_p, held = sum(range(1, 9)), sum(Decimal(n) / 10 for n in range(1, 9))
    everyone = in_p + Decimal("0.5") * 8 + 800
    for n, user in enumerate(users, start=1):
        usage = await budget.get_usage(user, "p")
        assert (usage["project"].daily.spent, usage["project"].held) == (in_p, held)
        assert usage["project"].monthly.spent == in_p
        assert (usage["global"].daily.spent, usage["global"].held) == (everyone, held)
        assert usage["user"].daily.spent == n + Decimal("100.5")
        assert usage["user"].held == Decimal(n) / 10


async def test_a_price_book_activated_on_one_manager_prices_every_bucket(
    make_budget: MakeBudget,
) -> None:
    writer, reader = _sharded(make_budget), _sharded(make_budget)
    users = _one_per_bucket()
    for user in users:
        await reader.add_credits(user, 10)

    async def every_bucket_prices_with(version: int, price: Decimal) -> None:
        for user in users:
            charged = await reader.deduct(user, USAGE)
            assert (charged.price_version, charged.amount) == (version, price), user
        for keys in writer.keys.buckets():  # each bucket's copy of the active
            assert await writer.redis.get(keys.price_active) == str(version).encode()

    v1 = await writer.publish_pricing(BOOK)
    await every_bucket_prices_with(v1, PRICE)
    # (the reader's cached version is a moment old: each bucket's copy says so)
    v2 = await writer.publish_pricing(_doubled(BOOK))
    await every_bucket_prices_with(v2, PRICE + Decimal("0.0045"))
    await writer.activate_pricing(v1)  # back to the older version
    await every_bucket_prices_with(v1, PRICE)


# -- idempotency and concurrency in a bucket ----------------------------------------


async def test_an_idempotency_key_replays_in_its_users_bucket(
    make_budget: MakeBudget,
) -> None:
    budget = _sharded(make_budget)
    ada, *rest = _one_per_bucket("ada")
    neighbour = next(  # a user of ada's bucket
        f"n-{i}" for i in range(1000) if bucket_of(f"n-{i}", BUCKETS) == 0
    )
    records = await asyncio.gather(
        *(budget.record_spend(ada, 1, idempotency_key="k") for _ in range(50))
    )
    assert len({r.entry_id for r in records}) == 1
    assert sum(not r.replayed for r in records) == 1
    first = await budget.reserve(ada, 2, idempotency_key="r")
    again = await budget.reserve(ada, 2, idempotency_key="r")
    assert again.replayed and again.id == first.id
    with pytest.raises(IdempotencyConflictError):
        await budget.record_spend(neighbour, 1, idempotency_key="k")
    elsewhere = await budget.record_spend(rest[4], 1, idempotency_key="k")
    assert not elsewhere.replayed and elsewhere.entry_id.endswith("~5")
    assert (await budget.get_usage(ada))["user"].daily.spent == 1
    assert (await budget.get_usage(rest[4]))["user"].daily.spent == 1
    assert (await budget.get_usage(neighbour))["user"].daily.spent == 0
    assert await budget.redis.xlen(budget.keys.of(ada).ledger) == 1


async def test_200_concurrent_reserves_per_user_admit_exactly_the_users_cap(
    make_budget: MakeBudget,
) -> None:
    fits = 37
    budget = _sharded(make_budget, daily_user_limit=AMOUNT * fits)
    users = _one_per_bucket()[2:8:4]  # two users, two buckets
    # (400 at once: the test client's pool has 512 connections)
    results = await asyncio.gather(
        *(budget.reserve(users[n % 2], AMOUNT) for n in range(400)),
        return_exceptions=True,
    )
    admitted: dict[str, list[Lease]] = defaultdict(list)
    for result in results:
        if isinstance(result, Lease):
            admitted[result.user_id].append(result)
        else:
            assert isinstance(result, BudgetExceededError), repr(result)
            assert (result.scope, result.window) == ("user", "daily"), repr(result)
    assert {user: len(leases) for user, leases in admitted.items()} == {
        user: fits for user in users
    }
    for user in users:
        assert (await budget.get_usage(user))["user"].held == AMOUNT * fits
        held = await budget.redis.get(budget.keys.of(user).held("user", user))
        assert int(held) == int(AMOUNT * fits * 1_000_000)
    await asyncio.gather(
        *(budget.release(lease.id) for ls in admitted.values() for lease in ls)
    )
    for user in users:
        assert (await budget.get_usage(user))["user"].held == 0


# -- the spool ---------------------------------------------------------------------


async def test_facts_spooled_while_redis_is_down_replay_into_their_buckets_once(
    private_redis: RedisServer, tmp_path: Path
) -> None:
    users = _one_per_bucket()[::2] + _one_per_bucket("more")[::2]  # 4 buckets
    charged: dict[str, Decimal] = defaultdict(Decimal)
    credited: dict[str, Decimal] = defaultdict(Decimal)
    facts: dict[int, int] = defaultdict(int)  # ledger entries told, by bucket
    config = _config(private_redis, tmp_path / "spool", cluster_buckets=BUCKETS)
    async with BudgetManager(config, clock=FakeClock()) as budget:
        leases, charges = {}, {}
        for n, user in enumerate(users, start=1):
            await budget.add_credits(user, 10)
            charges[user] = await budget.record_spend(user, n, project_id="p")
            leases[user] = await budget.reserve(user, 2)
            charged[user] += n
            credited[user] += 10
            facts[bucket_of(user, BUCKETS)] += 2
        private_redis.kill()
        told = []
        for n, user in enumerate(users, start=1):
            told += [
                await budget.record_spend(user, Decimal(n) / 100),
                await budget.add_credits(user, 3, idempotency_key=f"c-{user}"),
                await budget.settle(leases[user].id, "1.5"),
                await budget.refund(charges[user].entry_id, "0.25"),
            ]
            charged[user] += Decimal(n) / 100 + Decimal("1.25")
            credited[user] += 3
            facts[bucket_of(user, BUCKETS)] += 4
        assert all(record.spooled for record in told)
        await asyncio.to_thread(private_redis.start)
        await _drained(budget)

        for user in users:
            usage = (await budget.get_usage(user))["user"]
            assert usage.daily.spent == charged[user], user
            assert usage.balance == credited[user] - charged[user], user
            assert usage.held == 0, user
        for bucket, keys in enumerate(budget.keys.buckets()):
            assert await budget.redis.xlen(keys.ledger) == facts[bucket], bucket
            spent = await budget.redis.get(keys.day("20260315", "global", ""))
            mine = [u for u in users if bucket_of(u, BUCKETS) == bucket]
            expected = sum((charged[u] for u in mine), Decimal(0))
            assert Decimal(int(spent or 0)) / 1_000_000 == expected, bucket
        assert await budget.redis.exists(budget.keys.ledger) == 0  # the root's


def test_stream_homes_are_the_root_and_every_bucket() -> None:
    sharded = keys_for("p", 4)
    homes = sharded.stream_homes()
    assert homes[0] is sharded
    assert [k.ledger for k in homes[1:]] == [b.ledger for b in sharded.buckets()]
    assert len({k.ledger for k in homes}) == 5
    single = keys_for("p", 1)
    assert single.stream_homes() == (single,)
