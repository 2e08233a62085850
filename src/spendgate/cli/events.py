"""The event subcommands of ``spendgate``: ``events run``, ``events tail``.

``events run`` is an event dispatcher in a process of its own: it delivers
every event to the configured webhook(s) (``SPENDGATE_EVENTS_WEBHOOK_URL``,
signed with ``SPENDGATE_EVENTS_WEBHOOK_SECRET``), at least once, as the
consumer group ``SPENDGATE_EVENTS_WEBHOOK_GROUP``. ``events tail`` prints
the events the streams hold now (the fact events of the ledger entries not
flushed yet, and the others not yet acknowledged by every group) and, with
``--follow``, those that arrive; it reads without a group and acknowledges
nothing. ``--dead`` prints the dead letters instead.

Exit codes (those of :mod:`spendgate.cli`): 0 success, 2 usage or settings
error (no Redis URL, no webhook or no secret, httpx missing), 4 Redis
unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

from spendgate.cli.printer import printable
from spendgate.cli.runner import UsageError, run, settings
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from spendgate.config import BudgetConfig
    from spendgate.core.keys import Keys
    from spendgate.events.model import Event

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


#: the pause between two rounds of reads that found nothing, when following
#: a sharded deployment on a Redis Cluster (``events tail --follow``), seconds
TAIL_POLL_SECONDS = 0.1


def add_events(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "events",
        help="deliver events to webhooks, or print them",
        description="Event delivery: 'run' delivers every event to the configured "
        "webhook(s), signed, at least once; 'tail' prints events.",
    )
    actions = parser.add_subparsers(dest="events_action", metavar="ACTION")
    actions.required = True
    runner = actions.add_parser(
        "run",
        help="deliver events to the configured webhook(s) until SIGINT/SIGTERM",
        description="Deliver every event to SPENDGATE_EVENTS_WEBHOOK_URL (comma-"
        "separated for several), signed with SPENDGATE_EVENTS_WEBHOOK_SECRET, "
        "retried with backoff and dead-lettered after "
        "SPENDGATE_EVENTS_MAX_ATTEMPTS. Several can run at once: they share the "
        "events of their consumer group.",
    )
    runner.add_argument(
        "--once", action="store_true", help="deliver what is there now, then exit"
    )
    runner.add_argument(
        "--consumer",
        help="this dispatcher's name in its group; reuse it on restart to take "
        "back its pending events at once (default: host-pid-random)",
    )
    runner.add_argument(
        "--group",
        help="the consumer group (default: SPENDGATE_EVENTS_WEBHOOK_GROUP, "
        "spendgate-webhooks)",
    )
    runner.set_defaults(handler=run_events)
    tail = actions.add_parser(
        "tail",
        help="print the events the streams hold, and (--follow) new ones",
        description="Print the events still in Redis, oldest first: fact events "
        "of the ledger entries not flushed yet, and the others not yet "
        "acknowledged by every group. Reads without a consumer group: "
        "acknowledges nothing.",
    )
    tail.add_argument(
        "--follow", "-f", action="store_true", help="then print new events as they come"
    )
    tail.add_argument("--json", action="store_true", help="one JSON object per line")
    tail.add_argument(
        "-n",
        "--count",
        type=int,
        default=20,
        help="print at most this many existing events (default: %(default)s)",
    )
    tail.add_argument(
        "--dead", action="store_true", help="print the dead letters instead"
    )
    tail.set_defaults(handler=run_tail)


# -- run -----------------------------------------------------------------------------


def run_events(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.events.dispatcher import EventDispatcher
        from spendgate.events.webhook import WebhookSink, require_httpx

        config = settings(needs_redis=True)
        sinks = WebhookSink.from_config(config)
        if not sinks:
            raise UsageError(
                "no webhook configured: set SPENDGATE_EVENTS_WEBHOOK_URL and "
                "SPENDGATE_EVENTS_WEBHOOK_SECRET"
            )
        require_httpx()  # missing: exit 2 with the install hint, before any read
        dispatcher = EventDispatcher(
            config,
            targets=sinks,
            group=args.group or config.events_webhook_group,
            consumer=args.consumer,
        )
        names = ", ".join(sink.name for sink in sinks)
        if args.once:
            try:
                handled = await dispatcher.drain()
            finally:
                await dispatcher.aclose()
            print(
                f"handled {handled} entries; delivered {dispatcher.delivered_total}, "
                f"dead-lettered {dispatcher.dead_lettered_total}"
            )
            return ExitCode.OK
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, dispatcher.stop)
        print(
            f"delivering to {names} as consumer {dispatcher.consumer} of group "
            f"{dispatcher.group}; SIGINT/SIGTERM stops",
            file=sys.stderr,
        )
        await dispatcher.run()
        print(
            f"stopped; delivered {dispatcher.delivered_total}, dead-lettered "
            f"{dispatcher.dead_lettered_total}",
            file=sys.stderr,
        )
        return ExitCode.OK

    return run(body)


# -- tail ----------------------------------------------------------------------------


def run_tail(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.core.connection import client_for

        if args.count < 0:
            raise UsageError("--count must be 0 or more")
        config = settings(needs_redis=True)
        assert config.redis_url is not None
        redis = client_for(
            config.redis_url,
            cluster=config.redis_cluster,
            socket_timeout=15,
            socket_connect_timeout=5,
        )
        try:
            if args.dead:
                await _print_dead(redis, config, args)
            else:
                await _tail(redis, config, args)
        finally:
            await redis.aclose()
        return ExitCode.OK

    return run(body)


def _show(event: Event, as_json: bool) -> None:
    if as_json:
        print(event.to_json().decode())  # (ASCII-only: json.dumps escapes)
        return
    from spendgate.events.model import iso_ms

    scope = event.scope or "-"
    if event.scope_id:
        scope = f"{scope}:{event.scope_id}"
    data = json.dumps(event.data, separators=(",", ":"), default=str, ensure_ascii=True)
    print(
        printable(
            f"{iso_ms(event.occurred_at)} {event.type} id={event.id} "
            f"user={event.user_id or '-'} scope={scope} "
            f"window={event.window or '-'} {data}"
        )
    )
    sys.stdout.flush()


def _events_of(source: str, raw: list[Any], home: int = 0) -> list[Event]:
    """The events of stream entries of one home (an index of
    ``Keys.stream_homes()``; entries that are none are skipped)."""
    from spendgate.errors import PoisonEntryError
    from spendgate.events.entries import Entry, event_of
    from spendgate.ledger.stream import stream_entries

    events = []
    for sid, fields in stream_entries(raw):
        try:
            event = event_of(Entry(source, sid, fields, home))  # type: ignore[arg-type]
        except PoisonEntryError:
            continue
        if event is not None:
            events.append(event)
    return events


async def _tail(redis: Redis, config: BudgetConfig, args: argparse.Namespace) -> None:
    """Print the events every stream home holds, and (``--follow``) new ones.

    Sharded (``cluster_buckets``), each home (the root, every bucket) has
    its own streams: the existing events of all of them are merged by the
    time they happened, and those that arrive are printed read by read,
    each read's sorted by time (so two events of different buckets a read
    apart may print out of time order). On a single Redis one blocking
    ``XREAD`` covers every home; on a Redis Cluster, which refuses a read
    over several slots, each home is read without blocking in rounds, with
    a short pause after a round that found nothing.
    """
    from spendgate.core.shards import keys_for
    from spendgate.events.entries import stream_of
    from spendgate.ledger.entries import clean_text

    homes = keys_for(config.key_prefix, config.cluster_buckets).stream_homes()
    origins = {
        stream_of(home, source): (index, source)
        for index, home in enumerate(homes)
        for source in ("events", "ledger")
    }
    # Twice the count from each stream's end: ledger entries that are no
    # event (adjustments) are skipped; the newest one's id is where to follow.
    pipe = redis.pipeline(transaction=False)
    for stream in origins:
        pipe.xrevrange(stream, "+", "-", count=max(1, args.count * 2))
    last: dict[str, str] = {}
    existing: list[Event] = []
    replies = await pipe.execute()
    for (stream, (home, source)), raw in zip(origins.items(), replies, strict=True):
        last[stream] = clean_text(raw[0][0]) if raw else "0-0"
        if args.count:
            existing.extend(_events_of(source, list(reversed(raw)), home))
    # (stable: events of one millisecond keep their stream order)
    existing.sort(key=lambda e: e.occurred_at)
    for event in existing[-args.count :] if args.count else []:
        _show(event, args.json)
    if not args.follow:
        return
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    while not stopping.is_set():
        read = asyncio.ensure_future(_read_new(redis, homes, last))
        waiter = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({read, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not read.done():
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            break
        arrived: list[Event] = []
        for name, entries in read.result():
            if entries:
                last[name] = clean_text(entries[-1][0])
            home, source = origins[name]
            arrived.extend(_events_of(source, entries, home))
        for event in sorted(arrived, key=lambda e: e.occurred_at):
            _show(event, args.json)


async def _read_new(
    redis: Redis, homes: tuple[Keys, ...], last: dict[str, str]
) -> list[tuple[str, Any]]:
    """The entries after ``last`` of every stream, waiting about a second
    for some: one blocking read on a single Redis (or of one home), else a
    pipelined non-blocking read per home (see :func:`_tail`)."""
    from redis.asyncio import RedisCluster

    from spendgate.events.entries import stream_replies

    if len(homes) == 1 or not isinstance(redis, RedisCluster):
        return stream_replies(await redis.xread(last, count=100, block=1000))  # type: ignore[arg-type]
    for _ in range(10):
        pipe = redis.pipeline(transaction=False)
        for home in homes:
            names = (home.events, home.ledger)
            pipe.xread({name: last[name] for name in names}, count=100)
        found = [p for reply in await pipe.execute() for p in stream_replies(reply)]
        if any(entries for _, entries in found):
            return found
        await asyncio.sleep(TAIL_POLL_SECONDS)
    return []


async def _print_dead(
    redis: Redis, config: BudgetConfig, args: argparse.Namespace
) -> None:
    from spendgate.core.keys import Keys
    from spendgate.ledger.entries import clean_text

    if not args.count:
        return
    stream = Keys(config.key_prefix).events_dead
    raw: Any = await redis.xrevrange(stream, "+", "-", count=args.count)
    for sid, fields in reversed(raw):
        record = {clean_text(k): clean_text(v) for k, v in fields.items()}
        record["dead_at"] = clean_text(sid)
        if args.json:
            print(json.dumps(record, ensure_ascii=True))
            continue
        print(
            printable(
                f"{record.get('id', '-')} from "
                f"{record.get('stream', record.get('src', '-'))} "
                f"{record.get('sid', '-')}: {record.get('target', '-')} after "
                f"{record.get('n', '-')} attempts: {record.get('err', '')}"
            )
        )
