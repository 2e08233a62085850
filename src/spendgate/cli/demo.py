"""A short narrated walkthrough: ``spendgate demo``.

admit -> spend -> refused at the cap (with the reason and reset time) -> a
lease reserved and settled -> an idempotent replay that charges nothing.

It runs on the embedded in-process store unless given ``--redis-url``, and
reads no ``SPENDGATE_*`` (nor coreason) variable: the settings exported for
a deployment (a Redis, a balance to enforce, other caps) would change the
story. Each run has a key prefix of its own, deleted afterwards, so it can
run again, on the same Redis too.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING

from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from spendgate.cli.printer import fail
from spendgate.cli.runner import run
from spendgate.config import BudgetConfig, redact_url
from spendgate.errors import BudgetExceededError, ExitCode
from spendgate.manager import BudgetManager
from spendgate.models import SpendRecord

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

#: who the walkthrough is about
USER, PROJECT = "ada@example.com", "chatbot"

_EMBEDDED_HINT = (
    "the demo runs on the embedded store, which is not installed: "
    "pip install 'spendgate[embedded]' (or give --redis-url URL)"
)


def add_demo(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "demo",
        help="a narrated walkthrough on the embedded store (no Redis needed)",
        description="A narrated walkthrough of admission, spend, refusal, a lease "
        "and an idempotent replay, on the embedded in-process store (SPENDGATE_* "
        "settings are not read). Run it as often as you like.",
    )
    parser.add_argument(
        "--redis-url",
        help="run on this Redis instead, under a key prefix of its own that is "
        "deleted afterwards",
    )
    parser.add_argument(
        "--redis-cluster",
        action="store_true",
        help="--redis-url is a node of a Redis Cluster",
    )
    # The embedded store's "not for production" warning is the demo's point.
    parser.set_defaults(handler=run_demo, log_level_default="error")


def run_demo(args: argparse.Namespace) -> int:
    if args.redis_url is None and not _embedded_installed():
        return fail(_EMBEDDED_HINT, ExitCode.FAILURE)

    async def body() -> int:
        await walkthrough(demo_config(args.redis_url, cluster=args.redis_cluster))
        return ExitCode.OK

    return run(body)


def _embedded_installed() -> bool:
    try:
        importlib.import_module("fakeredis")
        importlib.import_module("lupa")  # fakeredis runs Lua through it
    except ImportError:
        return False
    return True


class _DemoConfig(BudgetConfig):
    """A ``BudgetConfig`` from its arguments only, never the environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def demo_config(redis_url: str | None = None, *, cluster: bool = False) -> BudgetConfig:
    """The demo's settings: a user cap of 1.00 a day, a fresh key prefix, and
    ``redis_url`` (``None``: the embedded store; ``cluster``: a node of a
    Redis Cluster), whatever the environment."""
    return _DemoConfig(
        redis_url=redis_url,
        redis_cluster=cluster,
        key_prefix=f"spendgate-demo-{uuid.uuid4().hex[:8]}",
        daily_user_limit=Decimal("1.00"),
        daily_project_limit=Decimal("50"),
        daily_global_limit=Decimal("500"),
    )


def _say(text: str) -> None:
    print(text, flush=True)


async def walkthrough(config: BudgetConfig | None = None) -> None:
    """Run the walkthrough (on :func:`demo_config` by default) and delete its
    keys; raises if any step does not behave as narrated."""
    config = config or demo_config()
    async with BudgetManager(config) as budget:
        store = (
            "the embedded in-process store"
            if budget.embedded
            else f"Redis at {redact_url(config.redis_url)}"
        )
        _say(
            f"spendgate demo on {store}: user {USER!r} "
            f"may spend 1.00 {config.unit} a day.\n"
        )
        try:
            first = await _admit_spend_refuse(budget)
            await _lease_and_replay(budget, first)
            await _priced_usage(budget)
        finally:
            await _delete_keys(budget)
        _say("Done: every step above was one atomic Lua script, one round trip.")


async def _delete_keys(budget: BudgetManager) -> None:
    from redis.exceptions import RedisError

    client = budget.redis
    try:
        keys = [k async for k in client.scan_iter(match=budget.keys.pattern())]
        for start in range(0, len(keys), 500):
            await client.delete(*keys[start : start + 500])
    except (RedisError, OSError):
        # A Redis that stopped answering keeps the demo's keys; what went
        # wrong in the walkthrough itself is the error worth reporting.
        pass


async def _admit_spend_refuse(budget: BudgetManager) -> SpendRecord:
    """Steps 1 to 3; returns the first spend's record (step 5 replays it)."""
    _say("1. Admission: may Ada spend an estimated 0.40?")
    await budget.check_availability(USER, PROJECT, Decimal("0.40"))
    _say("   admitted (one round trip, nothing changed yet).\n")

    _say("2. The call happened and cost 0.40: record the fact.")
    record = await budget.record_spend(
        USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini", idempotency_key="req-1"
    )
    usage = await budget.get_usage(USER, PROJECT)
    _say(
        f"   ledger entry {record.entry_id}; spent today: {usage['user'].daily.spent}\n"
    )

    _say("3. Another call of 0.40, then a third would pass the cap.")
    await budget.record_spend(USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini")
    try:
        await budget.check_availability(USER, PROJECT, Decimal("0.40"))
    except BudgetExceededError as refused:
        _say(
            f"   refused: {refused.scope} {refused.window} cap {refused.limit}, "
            f"spent {refused.spent}, requested {refused.requested}"
        )
        _say(f"   the window resets at {refused.resets_at:%Y-%m-%d %H:%M} UTC\n")
    else:
        raise AssertionError("the cap did not refuse")
    return record


async def _lease_and_replay(budget: BudgetManager, first: SpendRecord) -> None:
    """Steps 4 and 5: a lease settled at the real cost, then a free replay."""
    _say("4. A lease: hold 0.15 while the call runs, settle at the real cost.")
    async with budget.lease(USER, Decimal("0.15"), project_id=PROJECT) as lease:
        held = (await budget.get_usage(USER, PROJECT))["user"].held
        _say(
            f"   lease {lease.id} holds {held}; "
            f"it expires at {lease.expires_at:%H:%M:%S} UTC"
        )
        lease.actual_cost = Decimal("0.1234567")  # rounds up to 0.123457
        lease.model = "gpt-4o-mini"
    usage = await budget.get_usage(USER, PROJECT)
    _say(
        f"   settled: spent today {usage['user'].daily.spent}, "
        f"held {usage['user'].held}\n"
    )

    _say("5. A retry of request 'req-1' (same idempotency key) charges nothing.")
    replay = await budget.record_spend(
        USER, Decimal("0.40"), PROJECT, model="gpt-4o-mini", idempotency_key="req-1"
    )
    after = await budget.get_usage(USER, PROJECT)
    assert replay.replayed and replay.entry_id == first.entry_id
    assert after["user"].daily.spent == usage["user"].daily.spent
    _say(
        f"   replayed entry {replay.entry_id}; "
        f"spent today still {after['user'].daily.spent}"
    )
    _say(f"   remaining today: {after['user'].daily.remaining} {budget.config.unit}\n")


#: the demo's price book, in bursar's format
DEMO_BOOK = {
    "version": 1,
    "models": {
        "gpt-4o": "input_tokens * 0.0000025 + output_tokens * 0.00001",
        "_default": "input_tokens * 0.000001 + output_tokens * 0.000003",
    },
    "tools": {"web_search": "tool_calls * 0.01"},
    "fixed": {"batch_job": 0.75},
}


async def _priced_usage(budget: BudgetManager) -> None:
    """Step 6: a price book, prepaid credits and deduct."""
    from spendgate import InsufficientCreditsError, ToolCall, UsageMetrics

    _say("6. Priced usage: publish a price book (bursar's format), fund Bob, deduct.")
    version = await budget.publish_pricing(DEMO_BOOK, label="demo")
    await budget.add_credits("bob", Decimal("0.5"))
    usage = UsageMetrics(
        model="gpt-4o",
        input_tokens=1200,
        output_tokens=300,
        tool_calls=(ToolCall(name="web_search"),),
    )
    charged = await budget.deduct("bob", usage, idempotency_key="job-7")
    assert charged.breakdown is not None and charged.price_version == version
    _say(
        f"   version {version} priced it {charged.amount} (model "
        f"{charged.breakdown.model.normalize()} + tools "
        f"{charged.breakdown.tools.normalize()}); balance {charged.balance_after}"
    )
    try:
        await budget.deduct_fixed("bob", "batch_job")
    except InsufficientCreditsError as short:
        _say(f"   a batch_job (0.75) is refused: {short.limit} left; nothing changed\n")
    else:
        raise AssertionError("the balance did not refuse")


def main() -> None:
    """The walkthrough on the embedded store (``python -c``-friendly)."""
    asyncio.run(walkthrough())
