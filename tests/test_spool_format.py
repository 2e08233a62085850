"""The spool's record format: what a line holds, and the lines earlier versions wrote.

Checked: a fact encodes to one line and decodes to the very same fact (ids,
unicode, NUL, braces, big numbers); floats, booleans, what is not a fact and
arguments an operation does not take are refused when encoding; a torn line
or garbage decodes to nothing, and so does a signed record of no known shape
(wrong version, too many or too few arguments, a float, a boolean).

Upgrades: ``tests/data/`` holds segments written by earlier spendgate
versions themselves (record versions 1 and 2, see its README); they must
decode to the right operation and named arguments, rebuild the very keys
they were sent with, and replay every fact exactly once (real Redis and
fakeredis), a second copy of the same segment changing nothing.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from spendgate import BudgetManager
from spendgate.core.fact_keys import fact_keys
from spendgate.core.keys import Keys
from spendgate.core.operations import (
    CREDIT_GRANT_DEFAULTS,
    NO_PLAN_ARGS,
    OPERATIONS,
    positional_args,
)
from spendgate.core.scripts import SCRIPT_CONSTANTS, configured_source
from spendgate.durability.spool import SpooledFact, decode_fact, encode_fact
from spool_helpers import _ledger_len, _record_fact

DATA = Path(__file__).parent / "data"


def _signed_line(record: dict[str, Any]) -> bytes:
    """A spool line holding ``record``, with its checksum right."""
    body = json.dumps(record, separators=(",", ":")).encode()
    return b"%08x %s\n" % (zlib.crc32(body), body)


def _record_of(line: bytes) -> dict[str, Any]:
    """The record a spool line holds (its checksum is not checked)."""
    record: dict[str, Any] = json.loads(line.rstrip(b"\n")[9:])
    return record


#: the segments earlier versions wrote (tests/data/README.md): file, version
OLD_SEGMENTS = [
    pytest.param("spool-v1-be06aea.log", 1, id="v1"),
    pytest.param("spool-v2-a31a7f7.log", 2, id="v2"),
]
# What every old segment holds, in order (ids differ per file): operation,
# and the arguments that are the same in both.
_HEAD = {
    "now_ms": 1_773_576_000_000,
    "day": "20260315",
    "day_ttl_ms": 216_000_000,
    "month": "202603",
    "month_ttl_ms": 1_598_400_000,
}
_CALL_7 = {
    **_HEAD,
    "amount": 500_000,
    "fingerprint": "6acaed09bff8bdc355cf",
    "user": "ada",
    "project": "",
    "model": "",
    "metadata": "",
    "idempotency_key": "call-7",
}
OLD_FACTS: list[tuple[str, dict[str, str | int]]] = [
    (
        "record",
        {
            **_HEAD,
            "amount": 1_250_000,
            "fingerprint": "",
            "user": "ada",
            "project": "proj",
            "model": "gpt-x",
            "metadata": r'{"n":1,"note":"\u00fcn\u00efcode"}',
            "idempotency_key": "",
            # (a record spooled before allowances: no plan applies)
            **NO_PLAN_ARGS,
        },
    ),
    ("record", {**_CALL_7, **NO_PLAN_ARGS}),
    ("record", {**_CALL_7, **NO_PLAN_ARGS}),
    (
        "credit",
        {
            "now_ms": _HEAD["now_ms"],
            "amount": 10_000_000,
            "fingerprint": "ff44b6f9ff1875e4a891",
            "user": "ada",
            "metadata": '{"why":"top-up"}',
            "idempotency_key": "",
            # (a credit spooled before grants: a never-expiring purchase)
            **CREDIT_GRANT_DEFAULTS,
        },
    ),
    (
        "settle",
        {
            **_HEAD,
            "amount": 1_500_000,
            "model": "gpt-x",
            "metadata": "",
            **NO_PLAN_ARGS,
        },
    ),
]


@pytest.mark.parametrize(("name", "version"), OLD_SEGMENTS)
def test_old_records_decode_to_their_operation_and_named_arguments(
    name: str, version: int
) -> None:
    lines = (DATA / name).read_bytes().splitlines(keepends=True)
    assert len(lines) == len(OLD_FACTS)
    for line, (operation, expected) in zip(lines, OLD_FACTS, strict=True):
        raw = _record_of(line)
        assert raw["v"] == version and raw["s"] == f"lua_{operation}"
        fact = decode_fact(line)
        assert fact is not None
        assert fact.operation == operation
        assert list(fact.args) == list(OPERATIONS[operation].args)
        # The ids are the file's own; everything else is what was called.
        ids = {k: fact.args[k] for k in ("entry", "lease") if k in fact.args}
        assert fact.args == {**expected, **ids}
        assert fact.args["entry"] == raw["i"]["entry"]
        assert (fact.created_ms, fact.info) == (raw["t"], raw["i"])
        # The keys it was sent with follow from the arguments: nothing lost.
        prefix = raw["k"][0].split(":{sg}:")[0]
        assert fact_keys(Keys(prefix), operation, fact.args) == tuple(raw["k"])
        # (the arguments the operation gained since were not written)
        added = {**CREDIT_GRANT_DEFAULTS, **NO_PLAN_ARGS}
        written = [v for k, v in fact.args.items() if k not in added]
        if version == 1:  # the configuration it carried is what was dropped
            assert raw["a"][0] == f"{prefix}:{{sg}}:"
            assert (
                len(raw["a"])
                == len(written)
                + {
                    "record": 4,
                    "settle": 3,
                    "credit": 3,
                }[operation]
            )
        else:
            assert raw["a"] == written


async def _hold_of_old_lease(client: aioredis.Redis, base: str, lease: str) -> None:
    """The hold the old segments settle, as their run's ``reserve`` made it
    (that Redis is gone): same id, user, project, amount and expiry."""
    constants = dict.fromkeys(SCRIPT_CONSTANTS, "-1")  # no caps
    constants.update(
        BASE=base,
        ENFORCE_BALANCE="0",
        MIN_BALANCE="0",
        PURGE_MAX="100",
        IDEMPOTENCY_TTL_MS="86400000",
        LEDGER_MAXLEN="0",
        MODEL_CAPS="0",
    )
    reserve = client.register_script(configured_source("reserve", constants))
    args = {
        "now_ms": _HEAD["now_ms"],
        "day": "20260315",
        "month": "202603",
        "requested": 2_000_000,
        "user": "ada",
        "project": "proj",
        "fingerprint": "",
        "lease": lease,
        "expires_ms": _HEAD["now_ms"] + 300_000,
        "plan": "",
    }
    reply = await reserve(keys=[""], args=positional_args("reserve", args))
    assert reply[0] == 0, reply


@pytest.mark.parametrize(("name", "version"), OLD_SEGMENTS)
async def test_old_segments_replay_every_fact_exactly_once(
    make_budget: Any,
    redis_client: aioredis.Redis,
    key_prefix: str,
    tmp_path: Path,
    name: str,
    version: int,
) -> None:
    # Runs on the real Redis (and on fakeredis): a BudgetManager of today
    # finds a segment an old version left, and replays it; a second copy of
    # the same segment (as if the first replay was cut short before it could
    # delete the file) changes nothing.
    old = (DATA / name).read_bytes()
    settle = decode_fact(old.splitlines(keepends=True)[-1])
    assert settle is not None and settle.operation == "settle"
    lease = str(settle.args["lease"])
    await _hold_of_old_lease(redis_client, Keys(key_prefix).base, lease)
    for copy in range(2):
        budget: BudgetManager = make_budget(
            spool_path=tmp_path, spool_replay_interval_seconds=0.02
        )
        spool = budget.spool
        assert spool is not None
        spool.directory.mkdir(parents=True, exist_ok=True)
        (spool.directory / f"seg-000000000000{copy}-1-old.log").write_bytes(old)
        await budget.open()  # finds the leftovers, replays them
        for _ in range(1000):  # (the segment goes once all of it is replayed)
            if not list(spool.directory.glob("seg-*")):
                break
            await asyncio.sleep(0.01)
        assert not list(spool.directory.glob("seg-*")) and spool.depth == 0
        usage = await budget.get_usage("ada", project_id="proj")
        assert usage["user"].daily.spent == Decimal("3.25")  # 1.25 + 0.5 + 1.5
        assert usage["project"].daily.spent == Decimal("2.75")  # 1.25 + 1.5
        assert usage["global"].monthly.spent == Decimal("3.25")
        assert usage["user"].held == 0
        balance = await budget.get_balance("ada")
        assert balance.total == Decimal("8.5")  # the credit, less the settle
        assert [g.remaining for g in balance.grants] == [Decimal("8.5")]
        assert await _ledger_len(budget) == 4  # "call-7" twice is one fact
        assert spool.stats() | {"oldest_age_seconds": None} == {
            "depth": 0,
            "oldest_age_seconds": None,
            "spooled_total": 0,
            "replayed_total": 5,  # (found applied, the second time)
            "dead_letters": 0,
            "quarantined": 0,
            "corrupt_lines": 0,
        }


def test_records_of_no_known_shape_are_corrupt_though_signed() -> None:
    v1, v2 = (
        (DATA / name).read_bytes().splitlines(keepends=True)[0]
        for name in ("spool-v1-be06aea.log", "spool-v2-a31a7f7.log")
    )
    # (re-signed as they are, they still read)
    assert decode_fact(_signed_line(_record_of(v1))) == decode_fact(v1) is not None
    assert decode_fact(_signed_line(_record_of(v2))) == decode_fact(v2) is not None
    too_long = _record_of(v1)
    too_long["a"].insert(0, "x")
    short = _record_of(v2)
    short["a"].pop()
    not_a_fact = {**_record_of(v2), "s": "lua_check"}
    unknown_script = {**_record_of(v2), "s": "record"}
    fact = _record_fact()
    v3 = _record_of(encode_fact(fact))
    assert v3["v"] == 3
    future = {**v3, "v": 4}
    extra = {**v3, "a": {**v3["a"], "keys": "x"}}
    missing = {**v3, "a": {k: v for k, v in v3["a"].items() if k != "entry"}}
    a_float = {**v3, "a": {**v3["a"], "amount": 1.5}}
    a_bool = {**v3, "a": {**v3["a"], "amount": True}}
    not_named = {**v3, "a": list(v3["a"].values())}
    settle = {**v3, "o": "settle"}
    for record in (too_long, short, not_a_fact, unknown_script, future, extra):
        assert decode_fact(_signed_line(record)) is None, record
    for record in (missing, a_float, a_bool, not_named, settle):
        assert decode_fact(_signed_line(record)) is None, record
    assert decode_fact(_signed_line(v3)) == fact


def test_records_round_trip_exactly() -> None:
    fact = _record_fact(
        2**53,
        idempotency_key="ключ\n*",
        metadata='{"a":"ü\\u0000{}"}',
        project="p:{sg}:",
    )
    fact = SpooledFact(fact.operation, fact.args, info={"kind": "spend"})
    line = encode_fact(fact)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert decode_fact(line) == fact
    assert decode_fact(line[:-5]) is None
    assert decode_fact(b"garbage\n") is None
    with pytest.raises(TypeError):
        encode_fact(_record_fact(amount=1.5))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        encode_fact(_record_fact(amount=True))
    with pytest.raises(ValueError, match="not a fact"):
        encode_fact(SpooledFact("check", fact.args))
    with pytest.raises(ValueError, match="takes the arguments"):
        encode_fact(SpooledFact("settle", fact.args))
    with pytest.raises(ValueError, match="takes the arguments"):
        encode_fact(SpooledFact("record", {**fact.args, "keys": "k"}))
