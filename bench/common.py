"""What every bench shares: the default Redis, where results go, the costs
the hot-path calls use, cleaning a deployment's keys, the command a call
sends, and machine facts."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/12"
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: what each check asks for and each record charges: plain floats, as a
#: coreason-budget caller passes them (spendgate reads them exactly)
CHECK_COST = 0.01
RECORD_COST = 0.002
#: the per-user daily cap, and how full each user's budget is at the start
USER_LIMIT = 1000
PREFILL = 500


async def delete_prefix(client: Any, prefix: str) -> int:
    """Delete every key of the deployment ``prefix`` (SCAN, 500 per DEL);
    return how many there were. Used by every bench that makes keys.

    Every key of a deployment starts with ``"<prefix>:"``: the pattern is
    built here, not by spendgate, so every version of spendgate is cleaned
    alike (``bench.versus`` runs older ones beside this checkout)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    deleted = 0
    batch: list[bytes] = []
    async for key in client.scan_iter(match=escaped + ":*", count=1000):
        batch.append(key)
        if len(batch) >= 500:
            deleted += await client.delete(*batch)
            batch = []
    if batch:
        deleted += await client.delete(*batch)
    return deleted


async def first_command(
    manager: Any, op: Callable[[int], Awaitable[Any]], script: str
) -> tuple[Any, ...]:
    """The ``EVALSHA`` of ``script`` (an operation's name) that ``op(0)``
    sends through ``manager``'s client, as sent (the breakdowns replay it)."""
    client = manager.redis
    sent: list[tuple[Any, ...]] = []
    execute = client.execute_command

    async def recording(*command: Any, **options: Any) -> Any:
        sent.append(command)
        return await execute(*command, **options)

    client.execute_command = recording
    try:
        await op(0)
    finally:
        del client.execute_command  # the class's method again
    sha = manager._store.ensure_open().handles[script].sha
    return next(c for c in sent if c[:2] == ("EVALSHA", sha))


def loadavg() -> list[str] | None:
    try:
        return Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        return None


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import redis

    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "cpu_count": os.cpu_count(),
        "redis_py": redis.__version__,
    }
    try:
        import hiredis

        info["hiredis"] = getattr(hiredis, "__version__", "installed")
    except ImportError:
        info["hiredis"] = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                info["mem_total"] = line.split(":", 1)[1].strip()
                break
        info["loadavg"] = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        pass
    try:
        root = Path(__file__).resolve().parents[1]
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
        )
        info["git_commit"] = commit.stdout.strip() or None
    except OSError:
        info["git_commit"] = None
    return info
