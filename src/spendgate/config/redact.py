"""Secrets out of logs and errors: URLs and DSNs with their passwords hidden.

One place for every form a password takes in a connection string: the
user-info of a URL (``redis://:secret@host``, ``postgresql://u:secret@h``,
also when the password holds an unencoded ``#``, ``/`` or ``@``), a query
parameter named like a password (``?password=``, ``&sslpassword=``), and a
key/value DSN (``host=h password=secret``, quoted or not).
"""

from __future__ import annotations

import re
from urllib.parse import unquote

# A URL's scheme, and what follows it.
_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)", re.S)
# A query parameter whose name says it is a password (?password=, &sslpassword=).
_QUERY_SECRET = re.compile(r"(?i)([?&;][^=&;#?]*password[^=&;#?]*=)([^&;#]*)")
# A key/value pair (libpq's "host=h password=secret" form), value quoted or not.
_KEYWORD_SECRET = re.compile(
    r"(?i)((?:^|\s)\w*password\w*\s*=\s*)('(?:[^'\\]|\\.)*'?|\S*)"
)
# Where a parser may cut a password (an unencoded "#", "@", a space...).
_DELIMITERS = re.compile(r"[#/?@:&;\s'\\]")


def _userinfo_end(rest: str) -> int:
    """Where a URL's user-info ends (the "@" before the host), or -1.

    Passwords are not always percent-encoded (an "@", "#" or "/" in them), so
    it is taken to run to the last "@": when in doubt (an "@" in the query
    too) more is redacted, never less.
    """
    return rest.rfind("@")


def _redact_parts(url: str) -> tuple[str, list[str]]:
    """``url`` with every password replaced by ``***``, and those passwords."""
    secrets: list[str] = []

    def hide(match: re.Match[str]) -> str:
        value = match.group(2)
        secrets.append(value)
        if value.startswith("'"):  # libpq quoting: 'it\'s'
            secrets.append(re.sub(r"\\(.)", r"\1", value.strip("'")))
        return match.group(1) + "***"

    found = _URL.fullmatch(url)
    if found is None:  # a key/value DSN, or not a URL at all
        return _KEYWORD_SECRET.sub(hide, url), secrets
    rest = found["rest"]
    end = _userinfo_end(rest)
    userinfo, host = (rest[:end], rest[end + 1 :]) if end >= 0 else ("", rest)
    if ":" in userinfo:
        user, _, password = userinfo.partition(":")
        secrets.append(password)
        userinfo = f"{user}:***"
    host = _QUERY_SECRET.sub(hide, host)
    return found["scheme"] + (f"{userinfo}@" if end >= 0 else "") + host, secrets


def redact_url(url: str | None) -> str:
    """A URL or DSN with its passwords replaced by ``***``, for logs and
    errors: the user-info's (``redis://:secret@h``, also with an unencoded
    ``#`` or ``@``), query parameters named like ``password`` (``?password=``,
    ``&sslpassword=``) and key/value pairs (``host=h password=secret``)."""
    if not url:
        return "<none>"
    return _redact_parts(url)[0]


def redact_secrets(text: str, url: str | None) -> str:
    """``text`` (a driver's error message, say) with the passwords of ``url``
    replaced by ``***``: each whole, percent-decoded, and each piece a parser
    may have cut it into at a ``#``, ``@``, ``/``... (pieces of one character
    are left: they give nothing away)."""
    if not url:
        return text
    pieces: set[str] = set()
    for secret in _redact_parts(url)[1]:
        for form in (secret, unquote(secret)):
            pieces.add(form)
            pieces.update(_DELIMITERS.split(form))
    for piece in sorted(pieces, key=len, reverse=True):
        if len(piece) > 1:
            text = text.replace(piece, "***")
    return text


def redact_webhook_url(url: str) -> str:
    """A webhook URL as logs may show it: its scheme and host only. Webhook
    URLs often carry their token in the path or the query
    (``https://hooks.example.com/services/T0/B0/secret``), so both are
    replaced by ``/***``, and any user-info is dropped."""
    found = _URL.fullmatch(url)
    if found is None:
        return "***"
    rest = found["rest"]
    # A password may hold an unencoded "/": when in doubt, show less.
    after = rest[rest.rfind("@") + 1 :]
    host = re.split(r"[/?#]", after, maxsplit=1)[0]
    hidden = "/***" if host != rest else ""
    return found["scheme"] + host + hidden
