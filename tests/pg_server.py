"""A private PostgreSQL server for tests that stop and restart Postgres.

:class:`PrivatePostgres` runs a server of its own (``initdb`` + ``pg_ctl``
from ``/usr/lib/postgresql/15/bin``, or ``SPENDGATE_TEST_PG_BIN``) in a
temporary folder, on a free port: the shared server on 5432 is never
stopped. As root, it runs as the ``postgres`` OS user (PostgreSQL refuses to
run as root). Also :func:`wait_for`, the polling helper of the ledger tests.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
from pathlib import Path

from redis_server import free_port

PG_BIN = Path(os.environ.get("SPENDGATE_TEST_PG_BIN", "/usr/lib/postgresql/15/bin"))


class PrivatePostgres:
    """One private PostgreSQL server in ``directory``, on a free port."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log = directory / "server.log"
        self.port = free_port()
        self.dsn = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str) -> None:
        prefix: list[str] = []
        if os.geteuid() == 0:
            prefix = ["runuser", "-u", "postgres", "--"]
        subprocess.run(
            [*prefix, *argv],
            check=True,
            capture_output=True,
            timeout=60,
            cwd=self.directory,
        )

    def init(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run(
            str(PG_BIN / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1"
            " -c fsync=off -c full_page_writes=off"
        )
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
            "-o", options, "-w", "-t", "30", "start",
        )  # fmt: skip

    def stop(self, mode: str = "immediate") -> None:
        """Stop the server; ``immediate`` is a crash (no checkpoint, WAL replayed)."""
        self._run(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"
        )

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()


async def wait_for(
    predicate: object, timeout: float = 30.0, interval: float = 0.05
) -> None:
    """Await ``predicate()`` (sync or async) until true; fail after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = predicate()  # type: ignore[operator]
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
