"""Argument types the commands share: what a day or an instant looks like
on the command line, and the message when it does not."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, date, datetime

#: what a word starting with "-" looks like when it is a number, not an
#: option: argparse's own rule (``-2``, ``-2.5``, ``-.5``) and the exponent
#: forms it misses (``-1e-3``, ``-2.5E+2``)
_NEGATIVE_NUMBER = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$")


def takes_negative_numbers(parser: argparse.ArgumentParser) -> None:
    """Let ``parser``'s positionals take a negative number in any decimal
    spelling: argparse reads ``-1e-3`` as an unknown option (and then says
    the amount is missing), as it would any word starting with ``-`` that
    its own pattern does not call a number. (The parser's options, ``-h``
    and ``--...``, look like no number, so none is shadowed.)"""
    parser._negative_number_matcher = _NEGATIVE_NUMBER


def calendar_day(text: str) -> date:
    """``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        # date's own message ("Invalid isoformat string") names no rule.
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a calendar day: YYYY-MM-DD, e.g. 2026-03-15"
        ) from None


def moment(text: str) -> datetime:
    """``YYYY-MM-DD`` (its 00:00 UTC) or an ISO datetime (UTC when naive)."""
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        instant = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not YYYY-MM-DD or an ISO datetime"
        ) from None
    return instant if instant.tzinfo else instant.replace(tzinfo=UTC)


def day_or_moment(text: str) -> date | datetime:
    """``YYYY-MM-DD`` (a day, as the command reads days: ``adjust --at``
    takes it in the window time zone) or an ISO datetime (UTC when naive)."""
    if len(text) == 10:
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass  # (moment's message names both forms)
    return moment(text)
