"""The ``spendgate`` command: one entry point, subcommands per area."""

from __future__ import annotations

from spendgate.cli.main import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    build_parser,
    main,
)

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]
