"""Redis key names. The layout is documented once, in ``lua/_lib.lua``.

Every key of a deployment starts with ``"<key_prefix>:{sg}:"``: the prefix
separates deployments sharing one Redis, the ``{sg}`` hash tag keeps all of a
deployment's keys on one cluster slot (every call touches the global scope,
so they could not be spread anyway). Ids are always the last part of a key,
after a fixed-format structural part, so no id can alias another's key.
"""

from __future__ import annotations

#: scope name -> the letter used in keys
SCOPE_LETTERS = {"user": "u", "project": "p", "global": "g"}


class Keys:
    """Key builders for one deployment."""

    __slots__ = ("base", "due", "holds", "ledger")

    def __init__(self, key_prefix: str) -> None:
        self.base = f"{key_prefix}:{{sg}}:"
        #: pending leases scored by expiry (ms)
        self.holds = self.base + "holds"
        #: no pending lease expires before this time (ms): nothing to purge
        self.due = self.base + "due"
        #: the ledger stream, one entry per fact
        self.ledger = self.base + "ledger"

    def limits(self, scope: str, scope_id: str) -> str:
        """The cap overrides of one user, project or the global scope (id
        ``""``): ``"<daily>|<monthly>"``, either part empty for the default."""
        return f"{self.base}l:{SCOPE_LETTERS[scope]}:{scope_id}"

    def balance(self, user_id: str) -> str:
        """A user's prepaid balance (absent when none is kept)."""
        return self.base + "b:u:" + user_id

    def held(self, scope: str, scope_id: str) -> str:
        """What pending holds keep of one scope (absent at zero)."""
        return f"{self.base}r:{SCOPE_LETTERS[scope]}:{scope_id}"

    def hold(self, lease_id: str) -> str:
        return self.base + "h:" + lease_id

    def caller_idempotency(self, key: str) -> str:
        """The record of an idempotency key the caller gave."""
        return self.base + "i:c:" + key

    def generated_idempotency(self, entry_id: str) -> str:
        """The record of a fact the caller gave no key for (keyed by its entry id)."""
        return self.base + "i:a:" + entry_id

    def day(self, day: str, scope: str, scope_id: str) -> str:
        return f"{self.base}d:{day}:{SCOPE_LETTERS[scope]}:{scope_id}"

    def month(self, month: str, scope: str, scope_id: str) -> str:
        return f"{self.base}m:{month}:{SCOPE_LETTERS[scope]}:{scope_id}"

    def pattern(self) -> str:
        """A SCAN pattern matching every key of the deployment (glob-escaped)."""
        return "".join("\\" + c if c in "*?[]\\" else c for c in self.base) + "*"
