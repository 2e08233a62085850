"""A private redis-server for fault tests: killed, paused and restarted at will.

The machine's shared Redis (port 6379) is never touched: each
:class:`RedisServer` runs its own ``redis-server`` on a free port with its
data in a temporary folder, with ``appendonly yes`` and ``appendfsync always``
so a write Redis acknowledged survives a ``SIGKILL`` and a restart.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from redis import Redis as SyncRedis


def redis_server_binary() -> str | None:
    """The ``redis-server`` executable, or ``None`` when it is not installed."""
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """One private redis-server process.

    :param directory: where its AOF (and log) live
    :param extra_args: more ``redis-server`` options (a cluster node's)
    """

    def __init__(self, directory: Path, extra_args: Sequence[str] = ()) -> None:
        binary = redis_server_binary()
        if binary is None:
            raise RuntimeError("redis-server is not installed")
        self.binary = binary
        self.directory = directory
        self.port = free_port()
        self.extra_args = tuple(extra_args)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or restart, on the same port and data) and wait until it answers."""
        assert self.process is None, "already running"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.directory),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.directory / "redis.log"),
                "--daemonize",
                "no",
                *self.extra_args,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                client = SyncRedis(
                    port=self.port, socket_timeout=0.5, socket_connect_timeout=0.5
                )
                try:
                    client.ping()
                    return
                finally:
                    client.close()
            except Exception:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    log = (self.directory / "redis.log").read_text(errors="replace")
                    raise RuntimeError(f"redis-server did not start:\n{log}") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """``SIGKILL``: no shutdown, no final save (the AOF has every write)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)  # a paused one must die too
            self.process.kill()
        self.process.wait(timeout=10)
        self.process = None

    def pause(self) -> None:
        """``SIGSTOP``: connections stay open and nothing answers (a stall)."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def client(self) -> SyncRedis:
        return SyncRedis(port=self.port, socket_timeout=10)
