"""Reading a request body: bounded in size, parsed exactly, then validated.

The routes read their bodies here rather than through FastAPI's body
parameters: JSON numbers must become ``Decimal`` (``0.1`` stays ``0.1``), the
size limit holds while the body streams in, the whole body must arrive within
the app's ``body_timeout_seconds`` (:data:`BODY_TIMEOUT_SECONDS` by default),
and every failure is a 4xx :class:`~spendgate.server.errors.RequestProblem`.
A client that disconnects mid-body raises Starlette's ``ClientDisconnect``,
which :mod:`spendgate.server.errors` logs in one line.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from spendgate.server.errors import RequestProblem, field_errors, summary

__all__ = ["BODY_TIMEOUT_SECONDS", "DEFAULT_MAX_BODY_BYTES", "read_body", "read_raw"]

#: the largest request body accepted, in bytes (the default metadata limit is
#: 8 KiB; ids are at most 512 characters by default)
DEFAULT_MAX_BODY_BYTES = 65_536
#: the longest a whole request body may take to arrive, in seconds. Callers
#: are services sending at most 64 KiB, in milliseconds; a body still partial
#: after this is a stalled or hostile client holding a connection (and a
#: worker's memory) open, answered 408 and disconnected.
BODY_TIMEOUT_SECONDS = 10.0

M = TypeVar("M", bound=BaseModel)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


class _RepeatedKey(ValueError):
    """A JSON object names a key twice."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # JSON parsers disagree on which of two equal keys counts (Python's: the
    # last; others: the first or an error): a proxy or a log could read
    # another cost than the one charged. As a query parameter given twice,
    # it is refused.
    data = dict(pairs)
    if len(data) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return data


#: parse_float=Decimal keeps 0.1 exactly 0.1; NaN and Infinity, which
#: Python's json accepts, are refused, and so is a key given twice
_DECODER = json.JSONDecoder(
    parse_float=Decimal, parse_constant=_no_constant, object_pairs_hook=_unique_keys
)


async def _read_bounded(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise RequestProblem(413, f"request body above the limit of {limit} bytes")
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestProblem(413, f"request body above the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_raw(request: Request) -> bytes:
    """The bytes of ``request``'s body, within the app's size and time limits.

    :raise RequestProblem: 413 above the app's ``max_body_bytes``; 408 when
        the body has not arrived within ``body_timeout_seconds``
    :raise ClientDisconnect: the client went away before the whole body came
    """
    state = request.app.state
    try:
        async with asyncio.timeout(state.body_timeout_seconds):
            return await _read_bounded(request, state.max_body_bytes)
    except TimeoutError:
        raise RequestProblem(
            408,
            f"request body not received within {state.body_timeout_seconds:g} s",
            # The rest of the body may still come: the connection cannot
            # carry another request, so the server closes it.
            headers={"Connection": "close"},
        ) from None


async def read_body(request: Request, model: type[M], *, empty_ok: bool = False) -> M:
    """The body of ``request`` as a ``model``.

    :param empty_ok: an empty body is the model's defaults (an optional body)

    :raise RequestProblem: 413 above the app's ``max_body_bytes``; 408 when
        the body has not arrived within ``body_timeout_seconds``; 422 for an
        empty body, invalid JSON, an object naming a key twice, not an
        object, or what ``model`` refuses
    :raise ClientDisconnect: the client went away before the whole body came
    """
    raw = await read_raw(request)
    if not raw.strip():
        if empty_ok:
            return model()
        raise RequestProblem(422, "request body is empty: a JSON object is expected")
    try:
        # (json.loads of bytes, with a decoder made once: making one per
        # call cost more than the parse of a small body)
        text = raw.decode(json.detect_encoding(raw), "surrogatepass")
        data = _DECODER.decode(text)
    except _RepeatedKey as exc:
        error = {"loc": ["body", exc.key], "msg": "given more than once"}
        errors = [{**error, "type": "repeated"}]
        raise RequestProblem(422, summary(errors), errors) from None
    except (ValueError, RecursionError) as exc:
        raise RequestProblem(422, f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        kind = "null" if data is None else type(data).__name__
        raise RequestProblem(422, f"request body must be a JSON object, not {kind}")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        errors = field_errors(
            exc.errors(include_url=False, include_context=False, include_input=False)
        )
        raise RequestProblem(422, summary(errors), errors) from None
