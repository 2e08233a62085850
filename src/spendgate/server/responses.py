"""How answers are encoded, and the error answers each route documents.

:class:`SafeJSONResponse` is the app's default response class; the
``responses`` helpers put the error statuses of an operation into the
OpenAPI document with their bodies (:class:`~spendgate.server.schemas.Problem`
or :class:`~spendgate.server.schemas.Refusal`).
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel

from spendgate.server.schemas import Problem, Refusal

__all__ = [
    "CONFLICT",
    "ERRORS",
    "LEASE_CONFLICT",
    "REFUSED",
    "TEAM_ERRORS",
    "SafeJSONResponse",
    "request_body",
    "responses",
]


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: ASCII escapes, so an id holding a lone
    surrogate (valid JSON input) cannot turn an answer into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(
            content,
            ensure_ascii=True,
            allow_nan=False,
            separators=(",", ":"),
            default=str,
        ).encode("ascii")


#: the error statuses most operations share
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "no valid API key"},
    404: {
        "model": Problem,
        "description": "no such path: an id in it holds a newline",
    },
    408: {"model": Problem, "description": "the body did not arrive in time"},
    413: {"model": Problem, "description": "the body is above the size limit"},
    422: {"model": Problem, "description": "invalid input"},
    503: {"model": Problem, "description": "the budget store did not answer"},
}

REFUSED = {
    "model": Refusal,
    "description": "refused: a cap or the balance would be passed",
}
CONFLICT = {
    "model": Problem,
    "description": "idempotency key reused with other arguments",
}
#: a charge naming a team: the team's refusals other than a cap (429)
TEAM_ERRORS: dict[int | str, dict[str, Any]] = {
    403: {"model": Problem, "description": "the user is not the team's member"},
    404: {"model": Problem, "description": "no such team"},
}
LEASE_CONFLICT = {
    "model": Problem,
    "description": "illegal lease transition (settle after release, unknown lease, "
    "settle at another cost, extend of a lease no longer live)",
}


def responses(*codes: int, **extra: dict[str, Any]) -> dict[int | str, dict[str, Any]]:
    """The documented error answers of an operation: ``codes`` from
    :data:`ERRORS`, and others by keyword (``_429=REFUSED``)."""
    out: dict[int | str, dict[str, Any]] = {code: ERRORS[code] for code in codes}
    for code, spec in extra.items():
        out[int(code.lstrip("_"))] = spec
    return out


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` documenting ``model`` as the JSON body: the routes read
    their bodies themselves (exactly, see :mod:`spendgate.server.body`)."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }
