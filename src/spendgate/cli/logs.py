"""spendgate's log lines on the command line, at the level asked.

The library keeps quiet (``spendgate/__init__.py`` disables its loguru
logger); the ``spendgate`` command is an application, so it turns the lines
on, at ``--log-level``, on stderr, and drops loguru's default handler, which
would print everything down to DEBUG. ``serve`` logs at ``info`` by default
(a service's start, stop and outages belong in its log), ``demo`` at
``error``, the other commands at ``warning``, so a data command prints its
data, not "using Redis at ...". A command's parser names its own default
(``log_level_default``). With ``log_path`` set, the lines also go to
that file (coreason-budget's ``LOG_PATH``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from loguru import logger

from spendgate.errors import ConfigurationError

#: the levels ``--log-level`` accepts (uvicorn's names, loguru's levels)
LEVELS = ("critical", "error", "warning", "info", "debug")
#: ``serve``'s default level
SERVE_DEFAULT = "info"
#: every other command's default level
DEFAULT = "warning"
#: how ``spendgate serve`` hands the level to its worker processes
LOG_LEVEL_ENV = "SPENDGATE_SERVE_LOG_LEVEL"

_FORMAT = "{time:YYYY-MM-DD HH:mm:ss.SSS} | {level: <8} | {message}"
#: the handlers this module added (replaced when the level is set again)
_handlers: list[int] = []


def configure(level: str) -> None:
    """Send spendgate's log lines at ``level`` and above to stderr, and
    nothing else loguru's default handler would have printed.

    :raise ConfigurationError: ``log_path`` is set and cannot be written
    """
    if level not in LEVELS:
        raise ValueError(f"log level must be one of {', '.join(LEVELS)}")
    for handler in (0, *_handlers):  # 0: loguru's default stderr handler
        try:
            logger.remove(handler)
        except ValueError:
            pass  # already removed
    _handlers[:] = [logger.add(_to_stderr, level=level.upper(), format=_FORMAT)]
    path = _log_path()
    if path is not None:
        try:
            _handlers.append(logger.add(path, level=level.upper(), format=_FORMAT))
        except OSError as exc:  # (loguru opens the file, and makes its folder, now)
            raise ConfigurationError(
                f"log_path {path} cannot be written: {exc.strerror or exc}"
            ) from None
    logger.enable("spendgate")


def _log_path() -> Path | None:
    """``log_path`` of the settings (``SPENDGATE_LOG_PATH``, or coreason's
    ``COREASON_BUDGET_LOG_PATH``): a file the lines also go to. Settings
    that do not load are the command's to report, not the log's."""
    from spendgate.config import load_config

    try:
        return load_config().log_path
    except ConfigurationError:
        return None


def _to_stderr(message: object) -> None:
    # The stream of the moment, not the one at start-up: tests and
    # daemonisers swap sys.stderr.
    sys.stderr.write(str(message))
