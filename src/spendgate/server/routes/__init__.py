"""The routes, one module per resource; each module has a ``router``.

:data:`PUBLIC` needs no API key; every router of :data:`AUTHENTICATED` is
included behind :func:`spendgate.server.auth.authenticate`. A new resource
is a new module here, listed below.
"""

from __future__ import annotations

from fastapi import APIRouter

from spendgate.server.routes import (
    admission,
    corrections,
    credits,
    deduct,
    facts,
    health,
    leases,
    limits,
    ops,
    plans,
    teams,
    usage,
)

__all__ = ["AUTHENTICATED", "PUBLIC"]

PUBLIC: tuple[APIRouter, ...] = (health.router,)
AUTHENTICATED: tuple[APIRouter, ...] = (
    admission.router,
    facts.router,
    credits.router,
    deduct.router,
    leases.router,
    usage.router,
    limits.router,
    corrections.router,
    plans.router,
    teams.router,
    ops.router,
)
