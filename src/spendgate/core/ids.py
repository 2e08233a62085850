"""Checks of ids, models and metadata at the public API, before anything is sent.

Ids are opaque: any non-blank ``str`` up to the configured length is taken as
it is (the key layout, not escaping, keeps them from aliasing each other).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from spendgate.errors import InvalidArgumentError, InvalidIdError, InvalidIdTypeError

#: the longest model name accepted, in characters
MAX_MODEL_LENGTH = 256


def check_id(name: str, value: object, max_length: int) -> str:
    """Return ``value`` when it is a usable id.

    :param name: what the id is, for the error message (``"user_id"``)
    :param max_length: the longest id accepted, in characters
    :raise InvalidIdTypeError: when it is not a ``str``
    :raise InvalidIdError: when it is empty, blank, too long, or not encodable
    """
    if type(value) is not str:
        if not isinstance(value, str):
            raise InvalidIdTypeError(name, value)
        value = str(value)
    if not value or value.isspace():
        raise InvalidIdError(name, "empty or blank")
    if len(value) > max_length:
        raise InvalidIdError(
            name, f"{len(value)} characters, above the limit of {max_length}"
        )
    if not value.isascii():  # (a flag on str: free, unlike encoding)
        try:
            value.encode()
        except UnicodeEncodeError:
            raise InvalidIdError(name, "not encodable as UTF-8") from None
    return value


def user_id_of(user: object, max_length: int) -> str:
    """The user id of a ``str`` or of any object with a ``user_id`` attribute
    (coreason-budget's ``UserContext``)."""
    if not isinstance(user, str) and hasattr(user, "user_id"):
        user = user.user_id
    return check_id("user_id", user, max_length)


def user_of_call(user_id: object, user_context: object) -> object:
    """The user a coreason-style call names: ``user_id`` (a positional first
    argument) or ``user_context``, coreason-budget 0.4's name for it.

    :raise InvalidArgumentError: both are given
    """
    if user_context is None:
        return user_id
    if user_id is not None:
        raise InvalidArgumentError("give user_id or user_context, not both")
    return user_context


def check_optional_id(name: str, value: object, max_length: int) -> str | None:
    """Like :func:`check_id`, with ``None`` meaning "not given"."""
    return None if value is None else check_id(name, value, max_length)


def check_model(model: object) -> str | None:
    """A model name: ``None`` or a non-blank ``str`` of at most ``MAX_MODEL_LENGTH``."""
    return check_optional_id("model", model, MAX_MODEL_LENGTH)


def check_capped_model(model: object) -> str | None:
    """A model name that per-model caps key by: :func:`check_model`'s rule,
    and no control characters (a cap's key, a log line or a CLI listing
    shows it as it is)."""
    name = check_model(model)
    if name is not None and any(c < " " or c == "\x7f" for c in name):
        raise InvalidIdError("model", "control characters are not allowed")
    return name


def encode_metadata(metadata: object, max_bytes: int) -> str:
    """Metadata as compact, key-sorted JSON; ``""`` for none.

    :raise InvalidArgumentError: when it is not a mapping with string keys,
        holds a value JSON cannot carry (or NaN), or its JSON exceeds ``max_bytes``
    """
    if metadata is None:
        return ""
    if not isinstance(metadata, Mapping):
        raise InvalidArgumentError(
            f"metadata must be a mapping, not {type(metadata).__name__}"
        )
    try:
        text = json.dumps(
            _plain(metadata),
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
            default=_json_default,
        )
    except (TypeError, ValueError, RecursionError) as exc:
        raise InvalidArgumentError(
            f"metadata is not JSON-serialisable: {exc}"
        ) from None
    if len(text) > max_bytes:
        raise InvalidArgumentError(
            f"metadata is {len(text)} bytes as JSON, above the limit of {max_bytes}"
        )
    if "\\ud" in text and _has_lone_surrogate(metadata):
        # JSON escapes it, but no UTF-8 text (nor Postgres jsonb) can hold it:
        # refused here, like such an id, rather than dead-lettered later.
        raise InvalidArgumentError("metadata holds a lone surrogate (not UTF-8)")
    return text


def _has_lone_surrogate(metadata: Mapping[Any, Any]) -> bool:
    text = json.dumps(dict(metadata), ensure_ascii=False, default=_json_default)
    try:
        text.encode()
    except UnicodeEncodeError:
        return True
    return False


def _json_default(value: object) -> str:
    # Exact types a caller may well put in metadata; anything else is refused.
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("NaN or infinite Decimal")
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON-serialisable")


def _plain(metadata: Mapping[Any, Any]) -> dict[str, Any]:
    for key in metadata:
        if not isinstance(key, str):
            raise TypeError(f"metadata keys must be str, not {type(key).__name__}")
    return dict(metadata)
