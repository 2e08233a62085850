"""The OpenAPI document is the truth: the server accepts exactly what it allows.

How: the document is fetched from the app (``GET /openapi.json``), and each
candidate input (amount strings and numbers, TTLs, ids in bodies, paths and
queries, model names with per-model caps on, among them every disagreement
the fault probe's schemathesis run found) is judged twice: by the
document's own schema for that field (``jsonschema_rs``, the validator
schemathesis uses, which reads patterns as ECMA-262 does, as the document
means them), and by the server, on the embedded store without caps. What
the schema allows must be answered 200 (a team's path: 404 no such team);
what it refuses must be refused (422, or 404 for a path whose id holds a
newline, which no route matches).
"""

from __future__ import annotations

import json
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import jsonschema_rs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spendgate import BudgetConfig
from spendgate.server import create_app
from spendgate.server.fields import AMOUNT_PATTERN, ID_PATTERN, usable_id

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}

#: amounts as the raw JSON text of the value (strings quoted, numbers bare)
AMOUNTS = [
    '"5"',
    '"0"',
    '"0.5"',
    '"007.25"',
    '"1000000000"',
    '"1000000000.000000000000"',
    '"999999999.999999999999"',
    '" 5 "',
    '"5 "',
    '"1e3"',
    '"1E3"',
    '"1_000"',
    '"\\u0661\\u0662"',  # Arabic-Indic digits
    '"\\uff11"',  # a fullwidth 1
    '"+5"',
    '"-0"',
    '".5"',
    '"5."',
    '"1000000000.1"',
    '"1000000000.0000000000001"',
    '"9999999999"',
    '"0.0000000000001"',
    '""',
    '"NaN"',
    "5",
    "0",
    "-0",
    "1e3",
    "0.1",
    "1e-7",
    "1000000000",
    "1000000000.0",
    "1000000001",
    "-1",
]
TTLS = ["60", "14216.0", "1e3", "604800", "604800.0", "1.5", "0", "604801", "true"]
TTLS += ['"60"', "-5", "1e400"]
IDS = ["u", "a b", "\\u00fc", "a/b", "-", "x\\u200b", "\\u2028x"]
IDS += [" ", "\\n", "a\\nb", "a\\tb", "a\\rb", "a\\u0001", "a\\u007f", "a\\u0085"]
IDS += ["\\u3000"]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    config = BudgetConfig(
        key_prefix=f"document{uuid.uuid4().hex[:10]}",
        daily_user_limit=None,
        daily_project_limit=None,
        daily_global_limit=None,
    )
    app = create_app(config, api_keys=[KEY])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        yield client


async def _document(client: httpx.AsyncClient) -> dict[str, Any]:
    response = await client.get("/openapi.json", headers=AUTH)
    document: dict[str, Any] = response.json()
    return document


def _body_schema(document: dict[str, Any], path: str, method: str = "post") -> Any:
    operation = document["paths"][path][method]
    return operation["requestBody"]["content"]["application/json"]["schema"]


def _param_schema(document: dict[str, Any], path: str, name: str) -> Any:
    for parameter in document["paths"][path]["get"]["parameters"]:
        if parameter["name"] == name:
            return parameter["schema"]
    raise AssertionError(name)


def _allows(schema: Any, value: Any) -> bool:
    # Not python-jsonschema: Python's "$" also matches before a final newline.
    return bool(jsonschema_rs.validator_for(schema).is_valid(value))


async def _judge(
    client: httpx.AsyncClient, schema: Any, url: str, raw: str
) -> tuple[bool, int, str]:
    response = await client.post(url, content=raw.encode(), headers=AUTH)
    return _allows(schema, json.loads(raw)), response.status_code, response.text


@pytest.mark.parametrize("amount", AMOUNTS)
async def test_amounts_are_what_the_document_says(
    client: httpx.AsyncClient, amount: str
) -> None:
    document = await _document(client)
    for url, field, rest in [
        ("/spend", "cost", '"user_id": "u"'),
        ("/v1/credits", "amount", '"user_id": "u"'),
        ("/check", "estimated_cost", '"user_id": "u"'),
        ("/v1/reserve", "amount", '"user_id": "u"'),
    ]:
        raw = f'{{{rest}, "{field}": {amount}}}'
        allowed, status, text = await _judge(
            client, _body_schema(document, url), url, raw
        )
        assert status == (200 if allowed else 422), (url, amount, allowed, text)


@pytest.mark.parametrize("ttl", TTLS)
async def test_ttls_are_what_the_document_says(
    client: httpx.AsyncClient, ttl: str
) -> None:
    schema = _body_schema(await _document(client), "/v1/reserve")
    raw = f'{{"user_id": "u", "amount": 1, "ttl_seconds": {ttl}}}'
    allowed, status, text = await _judge(client, schema, "/v1/reserve", raw)
    assert status == (200 if allowed else 422), (ttl, allowed, text)


async def test_a_whole_float_ttl_is_that_many_seconds(
    client: httpx.AsyncClient,
) -> None:
    raw = b'{"user_id": "u", "amount": 1, "ttl_seconds": 14216.0}'
    before = datetime.now(UTC)
    response = await client.post("/v1/reserve", content=raw, headers=AUTH)
    assert response.status_code == 200, response.text
    expires_at = datetime.fromisoformat(response.json()["expires_at"])
    assert 14215 <= (expires_at - before).total_seconds() <= 14226
    usage = await client.get("/v1/usage/u", headers=AUTH)
    assert usage.json()["scopes"]["user"]["held"] == "1"


@pytest.mark.parametrize("id_", IDS)
async def test_ids_in_bodies_are_what_the_document_says(
    client: httpx.AsyncClient, id_: str
) -> None:
    document = await _document(client)
    for url, raw in [
        ("/check", f'{{"user_id": "{id_}"}}'),
        ("/check", f'{{"user_id": "u", "project_id": "{id_}"}}'),
        ("/spend", f'{{"user_id": "u", "cost": 1, "idempotency_key": "{id_}"}}'),
        ("/v1/release", f'{{"lease_id": "{id_}"}}'),
    ]:
        allowed, status, text = await _judge(
            client, _body_schema(document, url), url, raw
        )
        # An unknown lease is a 409: accepted as input, refused as a transition.
        expected = (200, 409) if allowed else (422,)
        assert status in expected, (url, id_, allowed, text)


@pytest.mark.parametrize("id_", IDS)
async def test_ids_in_paths_and_queries_are_what_the_document_says(
    client: httpx.AsyncClient, id_: str
) -> None:
    document = await _document(client)
    value = json.loads(f'"{id_}"')
    quoted = urllib.parse.quote(value, safe="/")
    cases = [
        ("/v1/usage/{user_id}", "user_id", f"/v1/usage/{quoted}"),
        ("/v1/limits/{scope}/{scope_id}", "scope_id", f"/v1/limits/user/{quoted}"),
    ]
    for path, name, url in cases:
        get = document["paths"][path]["get"]
        schema = next(p["schema"] for p in get["parameters"] if p["name"] == name)
        response = await client.get(url, headers=AUTH)
        expected = (200,) if _allows(schema, value) else (404, 422)
        assert response.status_code in expected, (url, value, response.text)
    schema = _param_schema(document, "/v1/usage/{user_id}", "project_id")
    response = await client.get(
        "/v1/usage/u", params={"project_id": value}, headers=AUTH
    )
    expected = (200,) if _allows(schema, value) else (422,)
    assert response.status_code in expected, (value, response.text)


async def test_team_ids_in_paths_are_what_the_document_says(
    client: httpx.AsyncClient,
) -> None:
    # The team path took no pattern: the document allowed what was a 422.
    document = await _document(client)
    get = document["paths"]["/v1/teams/{team_id}"]["get"]
    schema = next(p["schema"] for p in get["parameters"] if p["name"] == "team_id")
    for value in [json.loads(f'"{id_}"') for id_ in IDS if "/" not in id_]:
        url = f"/v1/teams/{urllib.parse.quote(value)}"
        response = await client.get(url, headers=AUTH)
        detail = response.json()["detail"]
        if _allows(schema, value):
            assert detail == f"no team {value!r}", (value, response.text)
        else:
            assert response.status_code in (404, 422), (value, response.text)
            assert not detail.startswith("no team"), (value, detail)


async def test_model_names_are_what_the_document_says() -> None:
    # The document allowed any non-blank name; with per-model caps on, the
    # library refuses a control character (a 422 the document did not say).
    config = BudgetConfig(
        key_prefix=f"document{uuid.uuid4().hex[:10]}",
        daily_user_limit=None,
        daily_project_limit=None,
        daily_global_limit=None,
        model_caps=True,
    )
    app = create_app(config, api_keys=[KEY])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        document = await _document(client)
        body_schema = _body_schema(document, "/check")
        query_schema = _param_schema(document, "/v1/usage/{user_id}", "model")
        for id_ in IDS:
            raw = f'{{"user_id": "u", "model": "{id_}"}}'
            allowed, status, text = await _judge(client, body_schema, "/check", raw)
            assert status == (200 if allowed else 422), (id_, allowed, text)
            value = json.loads(f'"{id_}"')
            response = await client.get(
                "/v1/usage/u", params={"model": value}, headers=AUTH
            )
            expected = 200 if _allows(query_schema, value) else 422
            assert response.status_code == expected, (value, response.text)


def test_the_pattern_names_every_space_python_knows() -> None:
    spaces = {
        chr(c)
        for c in range(0x110000)
        if chr(c).isspace() and not (c < 0x20 or 0x7F <= c <= 0x9F)
    }
    for c in range(0x110000):
        text = "a" + chr(c)
        if chr(c) in spaces:
            assert _allows({"pattern": ID_PATTERN}, text)
            assert not _allows({"pattern": ID_PATTERN}, chr(c))
    for space in spaces:
        assert not _allows({"pattern": ID_PATTERN}, space * 3), repr(space)


@settings(max_examples=2000, deadline=None, database=None)
@given(st.text(alphabet=st.characters(codec=None, exclude_categories=["Cs"])))
def test_the_id_pattern_says_what_the_validator_checks(text: str) -> None:
    try:
        usable_id(text)
        accepted = bool(text)
    except ValueError:
        accepted = False
    assert accepted == _allows({"type": "string", "pattern": ID_PATTERN}, text)


def test_the_patterns_say_what_the_validators_check() -> None:
    # The edges of each pattern, as a reader of the document would read them.
    assert _allows({"pattern": AMOUNT_PATTERN}, "1000000000.000")
    assert not _allows({"pattern": AMOUNT_PATTERN}, "1000000000.001")
    assert not _allows({"pattern": AMOUNT_PATTERN}, "1000000001")
    assert _allows({"pattern": AMOUNT_PATTERN}, "0.123456789012")
    assert not _allows({"pattern": AMOUNT_PATTERN}, "0.1234567890123")
    assert _allows({"pattern": ID_PATTERN}, "ada@example.com")
    assert not _allows({"pattern": ID_PATTERN}, "ada\n")
    assert not _allows({"pattern": ID_PATTERN}, " \t ")
