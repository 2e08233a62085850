"""The peer, coreason-budget 0.4.1: its own virtualenv and a worker process.

The peer's licence is non-commercial, so it is never a dependency of
spendgate: the bench installs it into ``bench/.peer-venv`` (gitignored) on
first use with the ordinary installer, and drives it in a separate process
(:mod:`bench.peer_worker`) over JSON lines. Its runs are interleaved with
spendgate's by the parent, one command at a time, so both see the same
machine noise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

PEER_NAME = "coreason-budget"
PEER_VERSION = "0.4.1"
#: litellm 1.107.0 was a compromised release (the peer pulls litellm in);
#: hiredis gives the peer the same reply parser spendgate uses, so the
#: comparison is between the libraries, not between parsers
PEER_REQUIREMENTS = (f"{PEER_NAME}=={PEER_VERSION}", "litellm!=1.107.0", "hiredis")

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_VENV = BENCH_DIR / ".peer-venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def installed_version(python: Path) -> str | None:
    """The peer's version in the venv of ``python``, or ``None``."""
    if not python.exists():
        return None
    probe = subprocess.run(
        [
            str(python),
            "-c",
            f"import importlib.metadata as m; print(m.version({PEER_NAME!r}))",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_peer_venv(venv: Path = DEFAULT_VENV, log: Any = print) -> Path:
    """Create ``venv`` and install the peer into it unless it is already there.

    :return: the venv's python
    """
    python = venv_python(venv)
    if installed_version(python) == PEER_VERSION:
        return python
    log(f"bench: installing {PEER_NAME} {PEER_VERSION} into {venv} (its own venv)")
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    uv = shutil.which("uv", path=str(Path(sys.executable).parent))
    if uv:
        cmd = [uv, "pip", "install", "-q", "--python", str(python), *PEER_REQUIREMENTS]
    else:
        cmd = [
            str(python),
            "-m",
            "pip",
            "install",
            "-q",
            "--disable-pip-version-check",
            *PEER_REQUIREMENTS,
        ]
    subprocess.run(cmd, check=True)
    if installed_version(python) != PEER_VERSION:
        raise RuntimeError(f"{PEER_NAME} {PEER_VERSION} did not install into {venv}")
    return python


def peer_env(scratch: str) -> dict[str, str]:
    """The worker's environment: the peer logs nowhere that matters."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPENDGATE_", "COREASON_"))
    }
    env["COREASON_BUDGET_LOG_PATH"] = os.path.join(scratch, "logs", "app.log")
    env["LOG_LEVEL"] = "CRITICAL"
    # litellm (imported by the peer) would otherwise try to download its price
    # map at import time, and wait for retries when there is no network
    env["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    return env


class PeerWorker:
    """A running :mod:`bench.peer_worker` process, driven one command at a time."""

    def __init__(self, python: Path) -> None:
        self.python = python
        self.proc: asyncio.subprocess.Process | None = None
        self.scratch = tempfile.mkdtemp(prefix="spendgate-bench-peer-")

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            str(self.python),
            "-u",
            str(BENCH_DIR / "peer_worker.py"),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            cwd=self.scratch,
            env=peer_env(self.scratch),
            limit=64 * 1024 * 1024,
        )

    async def call(self, cmd: str, **fields: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin and self.proc.stdout
        self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the peer worker exited during {cmd!r}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"peer worker, {cmd}: {reply['error']}")
        return reply

    async def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.returncode is None:
            try:
                await asyncio.wait_for(self.call("quit"), 10)
            except (RuntimeError, TimeoutError, BrokenPipeError, ConnectionResetError):
                pass
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        shutil.rmtree(self.scratch, ignore_errors=True)
        self.proc = None


def peer_import_seconds(python: Path, repeat: int) -> dict[str, Any]:
    """Wall time of ``import coreason_budget`` in fresh processes of the peer venv."""
    scratch = tempfile.mkdtemp(prefix="spendgate-bench-peer-import-")
    try:
        return import_seconds(
            python, "coreason_budget", repeat, cwd=scratch, env=peer_env(scratch)
        )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


_IMPORT_PROBE = """
import sys, time, json
t0 = time.perf_counter()
import {module}
elapsed = time.perf_counter() - t0
heavy = [m for m in ("litellm", "fastapi", "asyncpg") if m in sys.modules]
print(json.dumps({{"seconds": elapsed, "heavy": heavy, "modules": len(sys.modules)}}))
"""


def import_seconds(
    python: Path | str,
    module: str,
    repeat: int,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Time ``import module`` in ``repeat`` fresh interpreters (after one warm-up
    run that fills the bytecode cache); report the median and the heavy modules
    it pulled in.

    ``PYTHONDONTWRITEBYTECODE`` is left out of their environment: with it the
    warm-up writes no bytecode, and every run would compile the module's
    sources again, which no installed package does (pip compiles at install).
    """
    env = dict(os.environ if env is None else env)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    runs = []
    for i in range(repeat + 1):
        out = subprocess.run(
            [str(python), "-c", _IMPORT_PROBE.format(module=module)],
            capture_output=True,
            text=True,
            check=True,
            cwd=cwd,
            env=env,
        )
        if i:
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    seconds = sorted(r["seconds"] for r in runs)
    return {
        "module": module,
        "median_s": seconds[len(seconds) // 2],
        "min_s": seconds[0],
        "max_s": seconds[-1],
        "runs": len(runs),
        "heavy_modules_imported": runs[-1]["heavy"],
        "modules_loaded": runs[-1]["modules"],
    }
