"""``spendgate pricing``: versioned price books, as bursar's CLI has them.

``set FILE|-`` publishes a new immutable version and activates it (every
instance prices with it within a second); ``activate N`` switches to any
version (rolling back is activating an older one); ``get``, ``list``,
``export N`` and ``diff A B`` read them; ``validate FILE`` checks a book
without storing it and exits 2 with each error. Books are JSON or YAML.
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
from typing import TYPE_CHECKING, Any

from spendgate.cli.printer import dash, fail, print_json, print_table
from spendgate.cli.runner import run_on_budget
from spendgate.errors import ExitCode, PricingConfigError

if TYPE_CHECKING:
    from spendgate.manager import BudgetManager
    from spendgate.pricing.engine import PricingEngine

    SubParsers = argparse._SubParsersAction[argparse.ArgumentParser]


def add_pricing(sub: SubParsers) -> None:
    parser = sub.add_parser(
        "pricing",
        help="publish, activate and read versioned price books",
        description="Versioned price books (bursar's format, JSON or YAML), kept "
        "in the Redis of SPENDGATE_REDIS_URL.",
    )
    actions = parser.add_subparsers(dest="pricing_action", metavar="ACTION")
    actions.required = True
    put = actions.add_parser("set", help="publish a new version and activate it")
    put.add_argument("file", help="the price book, JSON or YAML; - for stdin")
    put.add_argument("--label", help="a note on the version, e.g. deploy-42")
    put.add_argument(
        "--no-activate", action="store_true", help="publish only; activate later"
    )
    put.set_defaults(handler=run_set)
    get = actions.add_parser("get", help="show the active version (or --version N)")
    get.add_argument("--version", type=int, help="another version")
    get.set_defaults(handler=run_get)
    listing = actions.add_parser("list", help="every version (* = active)")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=run_list)
    activate = actions.add_parser("activate", help="switch to a version")
    activate.add_argument("version", type=int)
    activate.set_defaults(handler=run_activate)
    validate = actions.add_parser("validate", help="check a book, store nothing")
    validate.add_argument("file", help="the price book, JSON or YAML; - for stdin")
    validate.set_defaults(handler=run_validate)
    diff = actions.add_parser("diff", help="unified diff between two versions")
    diff.add_argument("a", type=int)
    diff.add_argument("b", type=int)
    diff.set_defaults(handler=run_diff)
    export = actions.add_parser("export", help="one version as JSON")
    export.add_argument("version", type=int)
    export.set_defaults(handler=run_export)


def read_book(file: str) -> dict[str, Any]:
    """The book in ``file`` (``-``: stdin), JSON or YAML, as data: read as
    ``PricingEngine.from_file`` reads a file (UTF-8, at most 1 MiB; JSON by
    the extension, else by the first character).

    :raise PricingConfigError: it cannot be read or parsed, or is no mapping
    """
    from spendgate.pricing import book

    if file == "-":
        text, is_json = book.read_stream(getattr(sys.stdin, "buffer", sys.stdin))
    else:
        text, is_json = book.read_file(file)
    parse = book.from_json_text if is_json else book.from_yaml_text
    return book.mapping(parse(text), "")


def _load(file: str) -> PricingEngine:
    """The book in ``file`` (``-``: stdin), loaded.

    :raise PricingConfigError: it does not load
    """
    from spendgate.pricing.engine import PricingEngine

    return PricingEngine.from_dict(read_book(file))


def _pretty(config: Any) -> str:
    return json.dumps(config, indent=2, sort_keys=True, ensure_ascii=True) + "\n"


def run_validate(args: argparse.Namespace) -> int:
    from spendgate.pricing.engine import PricingEngine
    from spendgate.pricing.validation import book_errors

    try:
        data = read_book(args.file)
    except PricingConfigError as exc:
        return fail(f"invalid price book: {exc}", ExitCode.USAGE)
    errors = book_errors(data)
    for error in errors:  # each one, so that a book is fixed in one pass
        fail(f"invalid price book: {error}", ExitCode.USAGE)
    if errors:
        return ExitCode.USAGE
    engine = PricingEngine.from_dict(data)
    print(f"valid: {len(engine.config.get('models', {}))} model prices")
    return ExitCode.OK


def run_set(args: argparse.Namespace) -> int:
    try:
        engine = _load(args.file)
    except PricingConfigError as exc:
        return fail(f"invalid price book: {exc}", ExitCode.USAGE)

    async def work(budget: BudgetManager) -> int:
        version = await budget.publish_pricing(
            engine, label=args.label, activate=not args.no_activate
        )
        state = "published" if args.no_activate else "published and active"
        print(f"version {version} {state}")
        return ExitCode.OK

    return run_on_budget(work)


def run_get(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        book = await budget.get_pricing(args.version)
        if book is None:
            return fail("no price book is active", ExitCode.FAILURE)
        sys.stdout.write(_pretty(book.config))
        return ExitCode.OK

    return run_on_budget(work)


def run_export(args: argparse.Namespace) -> int:
    return run_get(args)  # the same JSON, of a version named


def run_list(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        versions = await budget.list_pricing()
        if args.json:
            print_json(
                [
                    {
                        "version": v.version,
                        "label": v.label,
                        "created_at": v.created_at.isoformat(),
                        "digest": v.digest,
                        "active": v.active,
                    }
                    for v in versions
                ]
            )
            return ExitCode.OK
        rows = [
            [
                ("* " if v.active else "  ") + str(v.version),
                dash(v.label),
                v.created_at.isoformat(timespec="seconds"),
                v.digest[:12],
            ]
            for v in versions
        ]
        print_table(["version", "label", "created", "digest"], rows)
        return ExitCode.OK

    return run_on_budget(work)


def run_activate(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        await budget.activate_pricing(args.version)
        print(f"version {args.version} active")
        return ExitCode.OK

    return run_on_budget(work)


def run_diff(args: argparse.Namespace) -> int:
    async def work(budget: BudgetManager) -> int:
        a = await budget.get_pricing(args.a)
        b = await budget.get_pricing(args.b)
        assert a is not None and b is not None  # (an unknown one raised)
        sys.stdout.writelines(
            difflib.unified_diff(
                _pretty(a.config).splitlines(keepends=True),
                _pretty(b.config).splitlines(keepends=True),
                fromfile=f"version {args.a}",
                tofile=f"version {args.b}",
            )
        )
        return ExitCode.OK

    return run_on_budget(work)
