"""ASGI middleware: admit each HTTP request against the budget before the
endpoint runs. Pure ASGI (no framework import), for FastAPI, Starlette or any
ASGI app::

    from spendgate.integrations.asgi import BudgetMiddleware

    app.add_middleware(
        BudgetMiddleware,
        budget=budget,
        user=user_of,  # user_of(scope) -> the user id, or None
        estimate=lambda scope: "0.05",
    )

Per request:

* ``user(scope)`` names the user; ``None`` lets the request through unguarded
  (health checks, static files).
* Admission: ``check_availability(user, project, estimate)``, or with
  ``hold=True`` a ``reserve`` of the estimate (a lease, held until the request
  ends). Refused: **429** with ``Retry-After`` (seconds until the refusing
  window resets; 60 for a balance) and a JSON body naming the scope, window and
  amounts. Store unavailable and failing closed: **503** with ``Retry-After: 1``.
  A bad user or project id: **400**. The endpoint does not run in any of these.
* The endpoint sees ``request.state.spendgate_user`` /
  ``spendgate_project`` and, with ``hold=True``, ``spendgate_lease`` (all
  ``None`` on a request that was let through unguarded).
* Charging is left to the endpoint (``await budget.record_spend(...)``, or set
  ``lease.actual_cost`` with ``hold=True``), or to an ``after`` hook:
  ``after(scope, status, lease)`` runs once the response is sent (``status`` is
  ``None`` when the app raised). Without a hook, a held lease is settled at its
  ``actual_cost``; a request that failed (exception or status >= 400) without
  one is released, and a successful one is settled at the estimate, so spend
  is never under-counted.
* Streamed responses (``hold=True`` and ``stream_step``): the endpoint also
  sees ``request.state.spendgate_meter``, a
  :class:`~spendgate.integrations.streaming.LeaseMeter` over the request's
  lease. The body's generator calls ``await meter.add(cost)`` for what each
  chunk costs before sending it; when the total would pass the hold, the
  lease is extended by ``stream_step`` (or by exactly what is missing, when
  a whole step does not fit). A refused extension raises
  ``BudgetExceededError`` in the generator, which ends the stream there.
  The metered total is the lease's ``actual_cost``: the lease is settled at
  exactly what was sent, also when the client disconnects mid-stream.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from loguru import logger

from spendgate.errors import (
    BudgetExceededError,
    BudgetUnavailableError,
    InvalidArgumentError,
    InvalidIdTypeError,
)
from spendgate.integrations.streaming import LeaseMeter
from spendgate.manager import BudgetManager
from spendgate.models import Lease

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: ``user(scope)`` / ``project(scope)``: an id, ``None``, or an awaitable of one
IdFn = Callable[[Scope], str | None | Awaitable[str | None]]
#: ``estimate(scope)``: an amount (``Decimal``, ``int``, ``str``, ``float``),
#: or an awaitable of one
EstimateFn = Callable[[Scope], Any]
#: ``after(scope, status, lease)``: charge or release once the response is done
AfterFn = Callable[[Scope, int | None, Lease | None], Awaitable[None]]

#: ``Retry-After`` of a 503: the store usually answers again within seconds
UNAVAILABLE_RETRY_AFTER_SECONDS = 1


async def _resolve(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


def _money(amount: Decimal | None) -> str | None:
    return None if amount is None else str(amount)


class BudgetMiddleware:
    """Admission control for HTTP requests; see the module docstring.

    :param app: the ASGI app to guard
    :param budget: the :class:`~spendgate.BudgetManager`
    :param user: ``user(scope)``, the user id (``None``: not guarded)
    :param estimate: ``estimate(scope)``, what the request may cost; defaults
        to 0 (admitted while the user has any budget left)
    :param project: ``project(scope)``, the project id, if any
    :param hold: reserve the estimate as a lease for the request's duration
        instead of only checking it
    :param after: ``after(scope, status, lease)``, run once the response is done
    :param stream_step: with ``hold``, what one extension of a streamed
        response's lease adds (an amount): the endpoint gets a
        ``spendgate_meter``; ``None`` (the default): no meter
    :param clock: what ``Retry-After`` counts from (returns an aware UTC
        ``datetime``); defaults to the system clock (tests pass the budget's)
    """

    def __init__(
        self,
        app: ASGIApp,
        budget: BudgetManager,
        *,
        user: IdFn,
        estimate: EstimateFn | None = None,
        project: IdFn | None = None,
        hold: bool = False,
        after: AfterFn | None = None,
        clock: Callable[[], datetime] | None = None,
        stream_step: Any = None,
    ) -> None:
        self.app = app
        self.budget = budget
        self.user = user
        self.estimate = estimate
        self.project = project
        self.hold = hold
        self.after = after
        self.clock = clock or (lambda: datetime.now(UTC))
        self.stream_step = stream_step

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        user = await _resolve(self.user(scope))
        state = scope.setdefault("state", {})
        if user is None:
            # Unguarded (no user): the endpoint still finds the attributes,
            # as None, rather than failing on a missing one.
            state["spendgate_user"] = state["spendgate_project"] = None
            state["spendgate_lease"] = state["spendgate_meter"] = None
            await self.app(scope, receive, send)
            return
        project = await _resolve(self.project(scope)) if self.project else None
        lease: Lease | None = None
        try:
            amount = await _resolve(self.estimate(scope)) if self.estimate else 0
            if self.hold:
                lease = await self._reserve(user, project, amount)
            else:
                await self.budget.check_availability(user, project, amount)
        except BudgetUnavailableError as exc:
            await self._reply(
                send,
                503,
                {"status": "unavailable", "detail": str(exc)},
                UNAVAILABLE_RETRY_AFTER_SECONDS,
            )
            return
        except BudgetExceededError as exc:
            await self._refuse(send, exc)
            return
        except (InvalidArgumentError, InvalidIdTypeError) as exc:
            await self._reply(send, 400, {"status": "invalid", "detail": str(exc)})
            return

        state["spendgate_user"] = user
        state["spendgate_project"] = project
        state["spendgate_lease"] = lease
        state["spendgate_meter"] = None
        if lease is not None and self.stream_step is not None:
            state["spendgate_meter"] = LeaseMeter(self.budget, lease, self.stream_step)
        status: int | None = None

        async def tracking_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except BaseException:
            await self._finish(scope, None, lease)
            raise
        await self._finish(scope, status, lease)

    async def _reserve(
        self, user: str, project: str | None, amount: Any
    ) -> Lease | None:
        try:
            return await self.budget.reserve(user, amount, project_id=project)
        except BudgetUnavailableError:
            # reserve never grants a lease without the store; with fail_open
            # the request goes through unheld, as check_availability would.
            if not self.budget.config.fail_open:
                raise
            logger.warning("spendgate: store unavailable, admitting (fail_open=True)")
            return None

    async def _finish(
        self, scope: Scope, status: int | None, lease: Lease | None
    ) -> None:
        try:
            if self.after is not None:
                await self.after(scope, status, lease)
            elif lease is not None:
                await self._settle_or_release(status, lease)
        except Exception as exc:  # the response is already on its way
            logger.opt(exception=exc).error(
                "spendgate: charging {} {} failed: {}",
                scope.get("method"),
                scope.get("path"),
                exc,
            )

    async def _settle_or_release(self, status: int | None, lease: Lease) -> None:
        if lease.actual_cost is not None:
            await self.budget.settle(
                lease, lease.actual_cost, lease.model, lease.metadata
            )
        elif status is None or status >= 400:
            await self.budget.release(lease)
        else:
            logger.warning(
                "spendgate: lease {} ended without actual_cost; "
                "settling at the estimate",
                lease.id,
            )
            await self.budget.settle(lease, lease.amount, lease.model, lease.metadata)

    async def _refuse(self, send: Send, exc: BudgetExceededError) -> None:
        body = exc.to_json(self.clock())
        await self._reply(send, 429, body, body["retry_after_seconds"])

    @staticmethod
    async def _reply(
        send: Send, status: int, body: dict[str, Any], retry_after: int | None = None
    ) -> None:
        payload = json.dumps(body).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
        ]
        if retry_after is not None:
            headers.append((b"retry-after", str(retry_after).encode()))
        await send(
            {"type": "http.response.start", "status": status, "headers": headers}
        )
        await send({"type": "http.response.body", "body": payload})
