"""The request's URL: its percent-escapes must spell UTF-8, and its query
names only parameters the route takes, each once (and a route without a
body is sent none).

ASGI servers decode the path (uvicorn: ``urllib.parse.unquote``) and
Starlette the query string with ``errors="replace"``: an escape that is not
UTF-8 (``%E9``, Latin-1's "é") becomes U+FFFD. Two different ids sent that
way (``caf%E9``, ``caf%FC``) would then both name the entity ``"caf\\ufffd"``:
its usage, balance and caps, which neither caller meant. Such a URL is
answered 422 here, before any route reads an id from it. The raw path is
optional in ASGI; without it the path is taken as the server decoded it.

A query parameter the route does not take is refused (422) as an unknown
body field is: ``POST /v1/credits/sweep?dryrun=true`` would otherwise run
the real sweep, and ``GET /v1/usage/ada?project=p`` answer without the
project. A parameter given twice is refused too: which one counts is not
for the server to guess. So is a body sent to a route that takes none:
``POST /v1/credits/sweep`` with ``{"dry_run": true}`` would otherwise run
the real sweep, and ``DELETE /v1/limits/user/ada`` with ``{"model": ...}``
clear the user's own caps (blank and ``{}`` say nothing and pass).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import unquote_to_bytes

from fastapi import Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from spendgate.server.body import read_raw
from spendgate.server.errors import RequestProblem, problem, summary

__all__ = ["Utf8UrlMiddleware", "known_inputs", "url_problem"]


def url_problem(raw_path: bytes, query_string: bytes) -> str | None:
    """Which part of the URL (``"path"`` or ``"query"``) does not decode as
    UTF-8, if any."""
    for where, raw in (("path", raw_path), ("query", query_string)):
        # (most URLs have no escape and are ASCII: nothing to decode)
        if b"%" not in raw and raw.isascii():
            continue
        try:
            unquote_to_bytes(raw).decode("utf-8")
        except UnicodeDecodeError:
            return where
    return None


class Utf8UrlMiddleware:
    """Answers 422 to a request whose path or query is not UTF-8 once
    percent-decoded (see the module's docstring)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            where = url_problem(
                scope.get("raw_path") or b"", scope.get("query_string", b"")
            )
            if where is not None:
                message = f"the {where} is not UTF-8 once percent-decoded"
                error = {"loc": [where], "msg": message, "type": "url_encoding"}
                response = problem(422, f"invalid request: {message}", [error])
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def known_inputs(request: Request) -> None:
    """The dependency of every authenticated route: the query names only
    the route's own parameters, each at most once, and a route that takes
    no body is sent none.

    :raise RequestProblem: 422 naming each unknown or repeated parameter,
        and a body sent to a route without one
    """
    scope = request.scope
    query = scope.get("query_string")
    sent_body = _declares_body(scope["headers"])
    if not query and not sent_body:
        return  # (most requests: nothing to compare)
    route = scope.get("route")
    if not isinstance(route, APIRoute):
        return
    errors = _query_errors(request, route) if query else []
    if sent_body and not _takes_body(route) and _stray(await read_raw(request)):
        errors.append(
            {
                "loc": ["body"],
                "msg": "this endpoint takes no body: its parameters are in "
                "the path and the query",
                "type": "extra_forbidden",
            }
        )
    if errors:
        raise RequestProblem(422, summary(errors), errors)


def _query_errors(request: Request, route: APIRoute) -> list[dict[str, Any]]:
    known = _query_names(route.dependant)
    errors = []
    seen: set[str] = set()
    for name, _ in request.query_params.multi_items():
        if name not in known:
            errors.append(
                {
                    "loc": ["query", name],
                    "msg": "Extra inputs are not permitted",
                    "type": "extra_forbidden",
                }
            )
        elif name in seen:
            errors.append(
                {
                    "loc": ["query", name],
                    "msg": "given more than once",
                    "type": "repeated",
                }
            )
        seen.add(name)
    return errors


def _declares_body(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the request's headers announce a body (not of length 0)."""
    for name, value in headers:
        if name == b"content-length":
            return value.strip() != b"0"
        if name == b"transfer-encoding":
            return True
    return False


def _takes_body(route: APIRoute) -> bool:
    """Whether ``route`` reads a body (its document says one)."""
    return "requestBody" in (route.openapi_extra or {})


def _stray(raw: bytes) -> bool:
    """Whether a body sent to a route without one says anything: blank and
    ``{}`` (which some clients send with every POST) say nothing."""
    if not raw.strip():
        return False
    try:
        return bool(json.loads(raw) != {})
    except ValueError:
        return True


def _query_names(dependant: Dependant) -> set[str]:
    """The query parameters a route takes, its dependencies' included."""
    names = {param.alias for param in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
