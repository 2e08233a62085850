"""Secrets out of logs and errors: URLs and DSNs with their passwords hidden.

One function for every form a password takes in a connection string: the
user-info of a URL (``redis://:secret@host``, ``postgresql://u:secret@h``,
also when the password holds ``#``, ``/``, ``?`` or ``@``), a query parameter
(``?password=secret``), and a key/value DSN (``host=h password=secret``,
quoted or not).
"""

from __future__ import annotations

import re

_MASK = "***"
#: a password in a query string
_QUERY_PASSWORD = re.compile(r"(?i)([?&;](?:password|passwd|pwd|pass)=)[^&;#]*")
#: a password in a key/value DSN, quoted ('it''s' or 'it\'s') or not
_KEYWORD_PASSWORD = re.compile(r"(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.|'')*'|[^\s]*)")


def redact_url(url: str | None) -> str:
    """A URL or DSN with its password replaced by ``***``, for logs and errors."""
    if not url:
        return "<none>"
    text = _QUERY_PASSWORD.sub(r"\1" + _MASK, url)
    scheme, sep, rest = text.partition("://")
    if not sep:
        return _KEYWORD_PASSWORD.sub(r"\1" + _MASK, text)
    # The user-info ends at the last "@" of the URL: a password may hold any
    # character, "#", "/", "?" and "@" included (split anywhere else, part of
    # it would show).
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = (user + colon + _MASK if colon else user) + rest[at:]
    return scheme + sep + rest


def scrub(text: str, url: str | None) -> str:
    """``text`` (an error message about ``url``) with every piece of the URL's
    password masked: a parser's complaint may quote part of it (an unencoded
    ``#`` ends the user-info early, and the rest is read as a port)."""
    if not url:
        return text
    _, sep, rest = url.partition("://")
    at = rest.rfind("@")
    if not sep or at < 0 or ":" not in rest[:at]:
        return text
    secret = rest[:at].partition(":")[2]
    for piece in sorted(re.split(r"[#/?@:&;=]", secret), key=len, reverse=True):
        if len(piece) >= 2:
            text = text.replace(piece, _MASK)
    return text
