"""The root of every spendgate error, and the scopes and windows a refusal names."""

from __future__ import annotations

from typing import Literal

Scope = Literal["user", "project", "global"]
#: the scope a refusal names: a charge on a team's pool may also be refused
#: by the team's pool (``"team"``) or the member's caps on it
#: (``"team_member"``, its ``scope_id`` the user)
RefusalScope = Literal["user", "project", "global", "team", "team_member"]
Window = Literal["daily", "monthly", "balance", "weekly", "minute"]

#: ``Retry-After`` of a refusal with no window to wait for: a balance can be
#: topped up at any moment
BALANCE_RETRY_AFTER_SECONDS = 60


class SpendgateError(Exception):
    """Root of every error spendgate raises on purpose.

    Pickled and copied as it is: its message and its fields, not by calling
    its class again. An exception's default pickling calls ``cls(*args)``
    with the one message ``args`` holds, which the errors' structured
    constructors take for their first field (a refusal's ``scope``) or
    refuse (``LeaseStateError`` needs three); an error crossing a process
    (a ``ProcessPoolExecutor``, a task queue such as arq) came back garbled
    or did not come back at all.
    """

    def __reduce__(self) -> tuple[object, ...]:
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(cls: type[SpendgateError], args: tuple[object, ...]) -> SpendgateError:
    """An error of ``cls`` holding ``args``, its ``__init__`` not called
    (pickle then restores its fields from its ``__dict__``)."""
    return cls.__new__(cls, *args)
