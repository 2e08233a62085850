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
    from spendgate.events.model import Event

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


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


def _events_of(source: str, raw: list[Any]) -> list[Event]:
    """The events of stream entries (entries that are none are skipped)."""
    from spendgate.errors import PoisonEntryError
    from spendgate.events.entries import Entry, event_of
    from spendgate.ledger.stream import stream_entries

    events = []
    for sid, fields in stream_entries(raw):
        try:
            event = event_of(Entry(source, sid, fields))  # type: ignore[arg-type]
        except PoisonEntryError:
            continue
        if event is not None:
            events.append(event)
    return events


async def _tail(redis: Redis, config: BudgetConfig, args: argparse.Namespace) -> None:
    from spendgate.core.keys import Keys
    from spendgate.events.streams import stream_replies
    from spendgate.ledger.entries import clean_text

    keys = Keys(config.key_prefix)
    streams = {"events": keys.events, "ledger": keys.ledger}
    last: dict[str, str] = {}
    existing: list[Event] = []
    for source, stream in streams.items():
        newest: Any = await redis.xrevrange(stream, "+", "-", count=1)
        last[source] = clean_text(newest[0][0]) if newest else "0-0"
        if args.count:
            # Twice the count from each stream's end: ledger entries that are
            # no event (adjustments) are skipped.
            raw: Any = await redis.xrevrange(stream, "+", "-", count=args.count * 2)
            existing.extend(_events_of(source, list(reversed(raw))))
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
    by_stream = {stream: source for source, stream in streams.items()}
    while not stopping.is_set():
        read = asyncio.ensure_future(
            redis.xread({streams[s]: last[s] for s in streams}, count=100, block=1000)
        )
        waiter = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({read, waiter}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        if not read.done():
            read.cancel()
            await asyncio.gather(read, return_exceptions=True)
            break
        for name, entries in stream_replies(read.result()):
            source = by_stream[name]
            if entries:
                last[source] = clean_text(entries[-1][0])
            for event in _events_of(source, entries):
                _show(event, args.json)


async def _print_dead(
    redis: Redis, config: BudgetConfig, args: argparse.Namespace
) -> None:
    from spendgate.core.keys import Keys
    from spendgate.ledger.entries import clean_text

    stream = Keys(config.key_prefix).events_dead
    raw: Any = await redis.xrevrange(stream, "+", "-", count=max(args.count, 1))
    for sid, fields in reversed(raw):
        record = {clean_text(k): clean_text(v) for k, v in fields.items()}
        record["dead_at"] = clean_text(sid)
        if args.json:
            print(json.dumps(record, ensure_ascii=True))
            continue
        print(
            printable(
                f"{record.get('id', '-')} from {record.get('src', '-')} "
                f"{record.get('sid', '-')}: {record.get('target', '-')} after "
                f"{record.get('n', '-')} attempts: {record.get('err', '')}"
            )
        )
