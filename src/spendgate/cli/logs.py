"""spendgate's log lines on the command line, at the level asked.

The library keeps quiet (``spendgate/__init__.py`` disables its loguru
logger); the ``spendgate`` command is an application, so it turns the lines
on, at ``--log-level``, on stderr, and drops loguru's default handler, which
would print everything down to DEBUG. ``serve`` logs at ``info`` by default
(a service's start, stop and outages belong in its log), ``demo`` at
``error``, the other commands at ``warning``, so a data command prints its
data, not "using Redis at ...". A command's parser names its own default
(``log_level_default``).
"""

from __future__ import annotations

import sys

from loguru import logger

#: the levels ``--log-level`` accepts (uvicorn's names, loguru's levels)
LEVELS = ("critical", "error", "warning", "info", "debug")
#: ``serve``'s default level
SERVE_DEFAULT = "info"
#: every other command's default level
DEFAULT = "warning"
#: how ``spendgate serve`` hands the level to its worker processes
LOG_LEVEL_ENV = "SPENDGATE_SERVE_LOG_LEVEL"

_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {message}"
#: the handler this module added (replaced when the level is set again)
_handler: int | None = None


def configure(level: str) -> None:
    """Send spendgate's log lines at ``level`` and above to stderr, and
    nothing else loguru's default handler would have printed."""
    global _handler
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    for handler in (0, _handler):  # 0: loguru's default stderr handler
        if handler is not None:
            try:
                logger.remove(handler)
            except ValueError:
                pass  # already removed
    _handler = logger.add(_to_stderr, level=level.upper(), format=_FORMAT)
    logger.enable("spendgate")


def _to_stderr(message: object) -> None:
    # The stream of the moment, not the one at start-up: tests and
    # daemonisers swap sys.stderr.
    sys.stderr.write(str(message))
