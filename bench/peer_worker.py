"""The peer's side of the benchmark: coreason-budget 0.4.1, in its own process.

Run by ``bench.peer`` with the python of ``bench/.peer-venv`` (spendgate is not
installed there, and the peer is never installed next to spendgate: its
licence is non-commercial). It answers JSON-line commands on stdin with
JSON lines on stdout, timing the peer with the very loops of
:mod:`bench.measure` that time spendgate. The peer's logging is switched off
(all loguru sinks removed) so it is measured at its fastest.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.measure import interleaved_samples, throughput


def _import_peer() -> Any:
    # The peer adds a log file sink under ./logs at import; point it at a
    # throwaway directory, then drop every sink.
    scratch = tempfile.mkdtemp(prefix="peer-logs-")
    os.environ.setdefault("COREASON_BUDGET_LOG_PATH", os.path.join(scratch, "app.log"))
    os.environ.setdefault("LOG_LEVEL", "CRITICAL")
    import coreason_budget
    from loguru import logger

    logger.remove()
    return coreason_budget


class Worker:
    def __init__(self) -> None:
        self.cb = _import_peer()
        from coreason_identity.models import UserContext

        self.UserContext = UserContext
        self.manager: Any = None
        self.users: list[Any] = []
        self.projects: list[str | None] = [None]
        self.check_cost = 0.01
        self.record_cost = 0.002

    def _make(self, redis_url: str, user_limit: float) -> Any:
        config = self.cb.CoreasonBudgetConfig(
            redis_url=redis_url,
            daily_user_limit_usd=user_limit,
            daily_project_limit_usd=1e12,
            daily_global_limit_usd=1e12,
        )
        return self.cb.BudgetManager(config)

    def _ctx(self, user_id: str) -> Any:
        return self.UserContext(user_id=user_id, email="bench@example.com")

    async def setup(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.redis_url = msg["redis_url"]
        self.manager = self._make(self.redis_url, float(msg["user_limit"]))
        self.users = [self._ctx(u) for u in msg["users"]]
        self.projects = list(msg["projects"]) or [None]
        self.check_cost = float(msg["check_cost"])
        self.record_cost = float(msg["record_cost"])
        prefill = float(msg["prefill"])
        if prefill > 0:
            for i, user in enumerate(self.users):
                project = self.projects[i % len(self.projects)]
                await self.manager.record_spend(user, prefill, project)
        return {"ok": True}

    def _op(self, name: str) -> Any:
        m = self.manager
        users, projects = self.users, self.projects
        nu, np_ = len(users), len(projects)
        check_cost, record_cost = self.check_cost, self.record_cost
        ping = m._async_ledger._redis.execute_command

        async def op_ping(i: int) -> object:
            return await ping("PING")

        async def op_check(i: int) -> object:
            return await m.check_availability(
                users[i % nu], projects[i % np_], check_cost
            )

        async def op_record(i: int) -> object:
            return await m.record_spend(users[i % nu], record_cost, projects[i % np_])

        async def op_pair(i: int) -> object:
            user, project = users[i % nu], projects[i % np_]
            await m.check_availability(user, project, check_cost)
            return await m.record_spend(user, record_cost, project)

        return {
            "ping": op_ping,
            "check": op_check,
            "record": op_record,
            "pair": op_pair,
        }[name]

    async def latency(self, msg: dict[str, Any]) -> dict[str, Any]:
        """The ops named in ``ops``, interleaved call by call."""
        samples = await interleaved_samples(
            {name: self._op(name) for name in msg["ops"]},
            int(msg["n"]),
            int(msg["start"]),
        )
        return {"samples": samples}

    async def throughput(self, msg: dict[str, Any]) -> dict[str, Any]:
        done, elapsed = await throughput(
            self._op(msg["op"]),
            int(msg["concurrency"]),
            float(msg["duration"]),
            int(msg["start"]),
        )
        return {"done": done, "elapsed": elapsed}

    async def overshoot(self, msg: dict[str, Any]) -> dict[str, Any]:
        """``tasks`` concurrent check-then-charge of ``cost`` against ``limit``."""
        manager = self._make(self.redis_url, float(msg["limit"]))
        user = self._ctx(msg["user"])
        cost = float(msg["cost"])
        exceeded = self.cb.BudgetExceededError

        async def one() -> bool:
            try:
                await manager.check_availability(user, None, cost)
            except exceeded:
                return False
            await manager.record_spend(user, cost, None)
            return True

        try:
            results = await asyncio.gather(*(one() for _ in range(int(msg["tasks"]))))
            keys = manager.guard._get_keys(msg["user"])
            recorded = await manager.guard.ledger.get_usage(keys["user"])
        finally:
            await manager.close()
        return {"admitted": sum(results), "recorded": recorded}

    async def cleanup(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Delete the keys the peer wrote (its names have no prefix: ``budget:*``)."""
        redis = self.manager._async_ledger._redis
        deleted = 0
        async for key in redis.scan_iter(match="budget:*", count=1000):
            deleted += await redis.delete(key)
        await self.manager.close()
        return {"deleted": deleted}


async def serve() -> None:
    worker: Worker | None = None
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    while True:
        line = await reader.readline()
        if not line:
            return
        msg = json.loads(line)
        try:
            if msg["cmd"] == "quit":
                print(json.dumps({"ok": True}), flush=True)
                return
            if worker is None:
                worker = Worker()
            reply = await getattr(worker, msg["cmd"])(msg)
        except Exception as exc:  # reported to the parent, which fails loudly
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        text = json.dumps(
            reply,
            default=lambda v: (
                None if isinstance(v, float) and math.isnan(v) else str(v)
            ),
        )
        print(text, flush=True)


if __name__ == "__main__":
    asyncio.run(serve())
