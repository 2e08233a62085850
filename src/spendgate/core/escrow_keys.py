"""Where escrow keeps a project's or the platform's cap on a sharded
deployment: the root's loans per scope and window (:func:`loans`)."""

from __future__ import annotations

from spendgate.core.keys import KEY_PARTS, SCOPE_LETTERS, Keys

__all__ = ["loans"]


def loans(root: Keys, scope: str, scope_id: str, window_id: str) -> str:
    """The root's hash of ``scope``'s loans in the window ``window_id`` (a
    day or a month): ``lent`` (micro-units lent in all), ``l:<loan id>``
    each loan, ``r:<return id>`` each return; a bucket's own (same name
    below its tag): ``allowance``, ``d:<loan id>`` each deposit, ``c:<reclaim
    id>`` each reclaim. Both expire with the window."""
    part = KEY_PARTS["ESCROW"]  # (Lua: K_ESCROW, lua/_escrow.lua)
    return f"{root.base}{part}{SCOPE_LETTERS[scope]}:{scope_id}:{window_id}"
