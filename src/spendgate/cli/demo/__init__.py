"""A short narrated walkthrough: ``spendgate demo``.

admit -> spend -> refused at the cap (with the reason and reset time) -> a
lease reserved and settled -> an idempotent replay that charges nothing ->
a price book and deduct -> a plan's limited feature -> fit to budget, a
streaming hold, a per-minute cap -> an event handler, an operator's
correction and the user's transactions -> a team's pool with a member cap,
and a per-model cap -> users spread over the buckets of a sharded keyspace
-> the keys moved to more buckets (rebucket).
The steps are in :mod:`.guard`, :mod:`.credits`, :mod:`.extras`,
:mod:`.teams`, :mod:`.shards` and :mod:`.rebucketing`.

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

from spendgate.cli.demo import credits, extras, guard, rebucketing, shards, teams
from spendgate.cli.demo.say import USER, say
from spendgate.cli.printer import fail
from spendgate.cli.runner import run
from spendgate.config import BudgetConfig, redact_url
from spendgate.errors import ExitCode
from spendgate.manager import BudgetManager

if TYPE_CHECKING:
    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


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
    """The demo's settings: a user cap of 1.00 a day, a fresh key prefix,
    timeouts of 5 s, and ``redis_url`` (``None``: the embedded store;
    ``cluster``: a node of a Redis Cluster), whatever the environment."""
    return _DemoConfig(
        redis_url=redis_url,
        redis_cluster=cluster,
        key_prefix=f"spendgate-demo-{uuid.uuid4().hex[:8]}",
        daily_user_limit=Decimal("1.00"),
        daily_project_limit=Decimal("50"),
        daily_global_limit=Decimal("500"),
        per_minute_caps=True,  # step 8 caps one user's minute
        cap_actions=True,  # step 9 gives one user's cap a warning
        model_caps=True,  # step 10 caps one user's model
        # a walkthrough, not a request path: a busy machine must not fail it
        # at the request path's quarter-second connect and command timeouts
        redis_connect_timeout_seconds=5.0,
        redis_timeout_seconds=5.0,
    )


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
        say(
            f"spendgate demo on {store}: user {USER!r} "
            f"may spend 1.00 {config.unit} a day.\n"
        )
        try:
            first = await guard.admit_spend_refuse(budget)
            await guard.lease_and_replay(budget, first)
            await credits.priced_usage(budget)
            await credits.plan_and_features(budget)
            await extras.stream_fit_and_velocity(budget)
            await extras.corrections_and_events(budget)
            await teams.pool_member_caps_and_models(budget)
            await shards.users_over_buckets(config)
            await rebucketing.more_buckets(config)
        finally:
            await _delete_keys(budget)
        say("Done: every step above was one atomic Lua script, one round trip.")


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


def main() -> None:
    """The walkthrough on the embedded store (``python -c``-friendly)."""
    asyncio.run(walkthrough())
