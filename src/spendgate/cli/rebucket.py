"""``spendgate rebucket --to N``: move a deployment's keys to another bucket
count (:func:`spendgate.rebucket.rebucket`).

Settings come from the ``SPENDGATE_*`` environment, ``cluster_buckets`` the
count the keys are laid out for now. Exit codes: 0 moved (or laid out for
the target already); 1 refused (each reason on stderr; nothing changed),
and for ``--dry-run`` when it would be; 2 usage or settings error (a target
a sharded deployment refuses, keys laid out for another count); 4 Redis
unavailable.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING

from spendgate.cli.printer import fail, print_json, print_table
from spendgate.cli.runner import run, settings
from spendgate.errors import ExitCode

if TYPE_CHECKING:
    from spendgate.rebucket import RebucketReport

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]

#: the report's counts, in the order printed
_COUNTS = (
    ("moved", "keys moved to their new bucket"),
    ("copied", "idempotency records copied to each bucket their user can be in"),
    ("merged", "project and platform day/month counters added up"),
    ("limits", "project and platform cap overrides copied to every bucket"),
    ("forwarded", "charge and hold records forwarded (id names another bucket)"),
    ("dropped", "project and platform counts a sharded layout keeps no cap on"),
    ("stream_entries", "unread stream entries of buckets that go, now the root's"),
    ("removed", "keys of buckets that go (read streams, indexes)"),
    ("unchanged", "keys already where they belong"),
)


def add_rebucket(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "rebucket",
        help="move the keys to another cluster_buckets (deployment stopped)",
        description="Move the deployment's keys from SPENDGATE_CLUSTER_BUCKETS "
        "buckets to --to buckets: users' keys to their new bucket, project and "
        "platform counters added up, records where their ids find them. Stop "
        "every process of the deployment first (flushers, dispatchers, apps); "
        "afterwards start them with SPENDGATE_CLUSTER_BUCKETS set to the target. "
        "Stopped half way, run it again with the same settings: it finishes.",
    )
    parser.add_argument(
        "--to", type=int, required=True, metavar="N", help="the bucket count to move to"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="count what would move and list what would be refused; change nothing",
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.set_defaults(handler=run_rebucket)


def run_rebucket(args: argparse.Namespace) -> int:
    async def body() -> int:
        from spendgate.rebucket import rebucket

        config = settings(args, needs_redis=True)
        report = await rebucket(config, args.to, dry_run=args.dry_run)
        if args.json:
            print_json(asdict(report))
        else:
            _print(report)
        for reason in report.refusals:
            fail(f"would refuse: {reason}", ExitCode.FAILURE)
        return ExitCode.FAILURE if report.refusals else ExitCode.OK

    return run(body)


def _print(report: RebucketReport) -> None:
    moves = f"{report.from_buckets} -> {report.to_buckets} buckets"
    if report.already:
        print(f"rebucket {moves}: laid out for {report.to_buckets} already")
        return
    done = "would do (dry run)" if report.dry_run else "done"
    print(f"rebucket {moves}: {done}, run {report.run}")
    print_table(
        ["what", "count"],
        [[text, getattr(report, name)] for name, text in _COUNTS],
    )
    if not report.dry_run:
        print(
            f"start the deployment with SPENDGATE_CLUSTER_BUCKETS={report.to_buckets}"
        )
