"""Blocking calls for code without an event loop (coreason-budget's ``*_sync``).

A manager's connection pool belongs to one event loop. The ``*_sync`` methods
run on a private loop in a daemon thread of the manager's own, started on the
first such call; a manager used through them must be used only through them
(and closed with :meth:`SyncCalls.close_sync`, or ``await close()``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Mapping
from typing import Any, TypeVar

from spendgate.models import SpendRecord
from spendgate.ops.extend import Extensions
from spendgate.ops.facts import Facts

T = TypeVar("T")


class SyncCalls(Extensions, Facts):
    """``check_availability_sync``, ``record_spend_sync``, ``close_sync``."""

    _sync_loop: asyncio.AbstractEventLoop | None = None

    def _blocking(self, call: Coroutine[Any, Any, T]) -> T:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            call.close()
            raise RuntimeError(
                "a *_sync method was called inside an event loop: await the "
                "async method instead"
            )
        loop = self._sync_loop
        if loop is None:
            loop = self._sync_loop = asyncio.new_event_loop()
            threading.Thread(
                target=_run_until_stopped,
                args=(loop,),
                name="spendgate-sync",
                daemon=True,
            ).start()
        return asyncio.run_coroutine_threadsafe(call, loop).result()

    def check_availability_sync(
        self,
        user_id: Any = None,
        project_id: str | None = None,
        estimated_cost: Any = 0,
        *,
        user_context: Any = None,
    ) -> bool:
        """:meth:`check_availability`, blocking."""
        return self._blocking(
            self.check_availability(
                user_id, project_id, estimated_cost, user_context=user_context
            )
        )

    def record_spend_sync(
        self,
        user_id: Any = None,
        cost: Any = None,
        project_id: str | None = None,
        model: str | None = None,
        idempotency_key: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        user_context: Any = None,
    ) -> SpendRecord:
        """:meth:`record_spend`, blocking."""
        return self._blocking(
            self.record_spend(
                user_id,
                cost,
                project_id,
                model,
                idempotency_key,
                metadata,
                user_context=user_context,
            )
        )

    async def _close_on_sync_loop(self) -> None:
        """Close what the sync loop opened, on that loop, then stop it."""
        loop, self._sync_loop = self._sync_loop, None
        if loop is None:
            return
        done = asyncio.run_coroutine_threadsafe(self._close_resources(), loop)
        await asyncio.wrap_future(done)
        loop.call_soon_threadsafe(loop.stop)

    def close_sync(self) -> None:
        """Close a manager used through the ``*_sync`` methods."""
        loop, self._sync_loop = self._sync_loop, None
        if loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close_resources(), loop).result()
        loop.call_soon_threadsafe(loop.stop)

    async def _close_resources(self) -> None:
        raise NotImplementedError  # BudgetManager's


def _run_until_stopped(loop: asyncio.AbstractEventLoop) -> None:
    loop.run_forever()
    loop.close()
