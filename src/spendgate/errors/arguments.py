"""Bad input: the call is refused before anything changes."""

from __future__ import annotations

from decimal import Decimal

from spendgate.errors.base import SpendgateError


class InvalidArgumentError(SpendgateError, ValueError):
    """An argument that is not valid: metadata, model, TTL, and the subclasses."""


class InvalidAmountError(InvalidArgumentError):
    """An amount that is not a finite, non-negative number within the maximum."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid amount {shown(value)}: {reason}")


def shown(value: object, limit: int = 80) -> str:
    """A caller's value as an error message shows it: its ``repr``, cut to
    ``limit`` characters."""
    # Whatever the value (a 5,000-digit int cannot even be turned into text),
    # the message stays short and is always made.
    try:
        text = repr(value)
    except Exception:
        return f"<{type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


class InvalidIdError(InvalidArgumentError):
    """An id or key that is empty, blank, or longer than the configured limit."""

    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        super().__init__(f"invalid {name}: {reason}")


class UnknownModelError(InvalidArgumentError, LookupError):
    """A model that neither the price overrides nor LiteLLM's cost map price
    per token, while no ``default_model_price`` is configured."""

    def __init__(self, model: str, reason: str = "") -> None:
        self.model = model
        self.reason = reason
        message = f"no price for model {model!r}"
        super().__init__(f"{message}: {reason}" if reason else message)


class ExpressionError(InvalidArgumentError):
    """A pricing expression could not be evaluated for this usage: division
    or modulo by zero, a non-finite or out-of-range result.

    :param expression: the expression's text
    :param reason: what went wrong
    """

    def __init__(self, expression: str, reason: str) -> None:
        self.expression = expression
        self.reason = reason
        super().__init__(f"pricing expression {expression!r}: {reason}")


class RefundExceedsChargeError(InvalidArgumentError):
    """A refund above what is left of the charge (``refundable``; ``requested``
    ``None``: all of it): a charge's refunds never exceed it. Nothing changed."""

    def __init__(self, entry_id: str, requested: Decimal | None, refundable: Decimal):
        self.entry_id, self.requested, self.refundable = entry_id, requested, refundable
        asked = "the rest" if requested is None else str(requested)
        super().__init__(f"cannot refund {asked} of {entry_id!r}: {refundable} left")


class UnknownEntryError(SpendgateError, LookupError):
    """No refundable charge of that entry id: unknown, older than
    ``refund_window_seconds``, or made with refunds off. Nothing changed."""

    def __init__(self, entry_id: str) -> None:
        self.entry_id = entry_id
        super().__init__(f"no refundable charge {entry_id!r}")


class InvalidIdTypeError(SpendgateError, TypeError):
    """An id that is not a ``str``."""

    def __init__(self, name: str, value: object) -> None:
        self.name = name
        super().__init__(f"{name} must be a str, not {type(value).__name__}")
