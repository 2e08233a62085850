"""What each kind of LiteLLM call sends and reports, for the callback of
:mod:`spendgate.integrations.litellm`: where its prompt is, what bounds its
output, the tokens its usage reports (and the text a streamed chunk
carries), and what it cost.

Chat completions carry ``messages`` and report ``prompt_tokens`` /
``completion_tokens``; the Responses API carries ``input`` and
``max_output_tokens`` and reports ``input_tokens`` / ``output_tokens``;
embeddings carry ``input`` and have no output; image generation is priced
per image, which spendgate's pricing does not cover: such a call is checked
against the caps before it runs and charged LiteLLM's own cost after.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from loguru import logger

from spendgate.core.money import to_decimal
from spendgate.errors import UnknownModelError

if TYPE_CHECKING:
    from spendgate.models import Lease

Kind = Literal["chat", "responses", "embedding", "image"]

#: LiteLLM's call types the callback guards, and their kind
CALL_KINDS: dict[str, Kind] = {
    "acompletion": "chat",
    "completion": "chat",
    "aresponses": "responses",
    "responses": "responses",
    "aembedding": "embedding",
    "embedding": "embedding",
    "aimage_generation": "image",
    "image_generation": "image",
}

#: the request keys that bound a call's output tokens, by kind
OUTPUT_BOUNDS: dict[Kind, tuple[str, ...]] = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "responses": ("max_output_tokens",),
    "embedding": (),
    "image": (),
}


def call_kind(call_type: object) -> Kind | None:
    """The kind of a LiteLLM call type (an enum or its value); ``None`` when
    the callback does not guard it."""
    return CALL_KINDS.get(str(getattr(call_type, "value", call_type)))


def as_int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def field(obj: object, name: str) -> object:
    if isinstance(obj, Mapping):
        return obj.get(name)
    return getattr(obj, name, None)


class Tokens(NamedTuple):
    """The tokens of a response's usage, in OpenAI's convention (cached and
    cache-write tokens are part of ``input``, reasoning part of ``output``)."""

    input: int
    output: int
    cached: int
    written: int
    reasoning: int


def usage_tokens(usage: object) -> Tokens:
    """The tokens a ``usage`` reports, whichever API's names it uses."""
    prompt = as_int(field(usage, "prompt_tokens")) or as_int(
        field(usage, "input_tokens")
    )
    output = as_int(field(usage, "completion_tokens")) or as_int(
        field(usage, "output_tokens")
    )
    input_details = field(usage, "prompt_tokens_details") or field(
        usage, "input_tokens_details"
    )
    output_details = field(usage, "completion_tokens_details") or field(
        usage, "output_tokens_details"
    )
    cached = as_int(field(input_details, "cached_tokens"))
    written = as_int(field(usage, "cache_creation_input_tokens"))
    reasoning = as_int(field(output_details, "reasoning_tokens"))
    # Some providers report the cache tokens beside the prompt, not in it.
    prompt = max(prompt, cached + written)
    return Tokens(prompt, output, cached, written, min(reasoning, output))


def prompt_of(kind: Kind, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """What LiteLLM's ``token_counter`` counts for the call's prompt:
    ``{"messages": [...]}`` or ``{"text": "..."}``."""
    if kind == "chat":
        return {"messages": kwargs.get("messages") or []}
    source = kwargs.get("input") or ""
    if isinstance(source, list) and all(isinstance(m, Mapping) for m in source):
        return {"messages": source}  # Responses API input as messages
    if isinstance(source, list):
        return {"text": "\n".join(str(part) for part in source)}
    return {"text": str(source)}


def metadata_of(kwargs: Mapping[str, Any]) -> Mapping[str, Any]:
    """The metadata a call carries (``metadata``, ``litellm_metadata`` or
    ``litellm_params.metadata``); empty when none."""
    for key in ("metadata", "litellm_metadata"):
        value = kwargs.get(key)
        if isinstance(value, Mapping):
            return value
    params = kwargs.get("litellm_params")
    if isinstance(params, Mapping) and isinstance(params.get("metadata"), Mapping):
        found: Mapping[str, Any] = params["metadata"]
        return found
    return {}


def streamed_texts(chunk: object) -> list[str]:
    """The output a streamed chat chunk carries, piece by piece: each
    choice's content and reasoning, and its tool calls' names and arguments
    (empty for a chunk that carries none, such as a usage chunk)."""
    texts: list[str] = []
    for choice in _items(field(chunk, "choices")):
        delta = field(choice, "delta")
        if delta is None:
            continue
        calls = _items(field(delta, "tool_calls"))
        legacy = field(delta, "function_call")
        functions = [field(call, "function") for call in calls]
        pieces = [field(delta, "content"), field(delta, "reasoning_content")]
        for function in [*functions, legacy]:
            if function is not None:
                pieces += [field(function, "name"), field(function, "arguments")]
        texts += [piece for piece in pieces if isinstance(piece, str) and piece]
    return texts


def _items(value: object) -> list[object]:
    return list(value) if isinstance(value, list | tuple) else []


def reported_cost(
    cost: Callable[[str, object], Decimal],
    model: str,
    kwargs: Mapping[str, Any],
    response_obj: object,
    lease: Lease | None,
) -> Decimal:
    """What a call that succeeded cost: its usage priced by ``cost(model,
    usage)``; without usage, or for a model ``cost`` cannot price, LiteLLM's
    own figure; else the lease's amount.

    :raise UnknownModelError: none of these is known
    """
    response = kwargs.get("complete_streaming_response") or response_obj
    usage = field(response, "usage")
    if usage is not None:
        try:
            return cost(model, usage)
        except UnknownModelError:
            pass
    # No usage, or a model our pricing cannot price: LiteLLM's own figure
    # (a float, read through its shortest repr), else the reserved amount,
    # so spend is never under-counted.
    reported = kwargs.get("response_cost")
    if isinstance(reported, int | float) and not isinstance(reported, bool):
        if reported >= 0:
            return to_decimal(reported)
    if lease is not None:
        logger.warning(
            "spendgate: no cost for LiteLLM call on {!r}; settling at the estimate",
            model,
        )
        return lease.amount
    raise UnknownModelError(model, "LiteLLM reported neither usage nor a cost")
