"""The server answers every error from the one outcome table.

How: each error class of :data:`spendgate.errors.OUTCOMES` is raised by a
stub budget put in place of the app's (``app.state.budget``, so no store is
involved) behind an admission route and a fact route. The answer must carry
the table's status (but for the one exception the server keeps,
``LedgerUnavailableError``: 500), a 503 must count a store error under the
table's metric label, and the decision and fact counters must keep the labels
dashboards have always seen. A non-spendgate exception is a
500 with a JSON body, not a traceback page.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from spendgate import BudgetConfig
from spendgate.errors import (
    OUTCOMES,
    BudgetExceededError,
    BudgetUnavailableError,
    ConfigurationError,
    FeatureLimitExceededError,
    FeatureNotEntitledError,
    IdempotencyConflictError,
    InvalidArgumentError,
    InvalidIdTypeError,
    LeaseStateError,
    LedgerUnavailableError,
    NotATeamMemberError,
    Outcome,
    PoisonEntryError,
    PricingConfigError,
    RebucketRefusedError,
    RefundExceedsChargeError,
    ShardedRefusalError,
    SpendgateError,
    SpoolFullError,
    StorageError,
    TeamExistsError,
    TeamNotFoundError,
    UnknownEntryError,
    WebhookError,
)
from spendgate.server import create_app

KEY = "k"
AUTH = {"Authorization": f"Bearer {KEY}"}

#: one instance of each class of the table
INSTANCES: dict[type[BaseException], SpendgateError] = {
    BudgetUnavailableError: BudgetUnavailableError("down"),
    BudgetExceededError: BudgetExceededError("user", "u", "balance"),
    SpoolFullError: SpoolFullError("full"),
    LedgerUnavailableError: LedgerUnavailableError("pg"),
    StorageError: StorageError("damaged"),
    IdempotencyConflictError: IdempotencyConflictError("k1"),
    # (its count starts again far ahead: Retry-After says how far)
    FeatureLimitExceededError: FeatureLimitExceededError(
        "u", "f", 5, 5, "monthly", datetime.now(UTC) + timedelta(days=400)
    ),
    FeatureNotEntitledError: FeatureNotEntitledError("u", "f", None),
    LeaseStateError: LeaseStateError("l1", "settled", "release"),
    NotATeamMemberError: NotATeamMemberError("t1", "u"),
    TeamNotFoundError: TeamNotFoundError("t1"),
    TeamExistsError: TeamExistsError("t1"),
    RefundExceedsChargeError: RefundExceedsChargeError("e1", Decimal(2), Decimal(1)),
    UnknownEntryError: UnknownEntryError("e1"),
    PricingConfigError: PricingConfigError("bad", "x ** 2", "1:2", "models.m"),
    ConfigurationError: ConfigurationError("bad"),
    InvalidArgumentError: InvalidArgumentError("bad"),
    InvalidIdTypeError: InvalidIdTypeError("user_id", 5),
    PoisonEntryError: PoisonEntryError("poison"),
    ShardedRefusalError: ShardedRefusalError("teams with cluster_buckets=8"),
    RebucketRefusedError: RebucketRefusedError(["pending holds (1, e.g. k)"]),
    WebhookError: WebhookError("https://hooks.example.com/***", "answered 500", 500),
    SpendgateError: SpendgateError("other"),
}

#: where the server's status is not the table's, and why it is kept: the
#: server never talks to Postgres, and has always answered it as a bug
KEPT_STATUS = {LedgerUnavailableError: 500}


class Raising:
    """A budget whose every call raises ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            raise self.error

        return call


def make_app(error: BaseException) -> FastAPI:
    app = create_app(BudgetConfig(key_prefix="errors"), api_keys=[KEY])
    app.state.budget = Raising(error)
    return app


def client_of(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://t")


def sample(app: FastAPI, name: str, **labels: str) -> float:
    value = app.state.metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


def test_every_class_of_the_table_has_an_instance() -> None:
    assert set(INSTANCES) == {kind for kind, _ in OUTCOMES}


@pytest.mark.parametrize(
    ("kind", "outcome"), OUTCOMES, ids=[kind.__name__ for kind, _ in OUTCOMES]
)
async def test_status_and_store_errors_come_from_the_table(
    kind: type[SpendgateError], outcome: Outcome
) -> None:
    status = KEPT_STATUS.get(kind, outcome.status)
    app = make_app(INSTANCES[kind])
    async with client_of(app) as client:
        for url, body in [
            ("/check", {"user_id": "u"}),
            ("/spend", {"user_id": "u", "cost": 1}),
        ]:
            response = await client.post(url, json=body, headers=AUTH)
            assert response.status_code == status, (kind, url, response.text)
            assert response.headers["content-type"] == "application/json"
            assert response.json()["detail"]
            if status == 429:
                assert response.json()["status"] == "refused"
                wait = int(response.headers["retry-after"])
                if kind is FeatureLimitExceededError:
                    assert 399 * 86400 < wait <= 400 * 86400
                else:
                    assert wait == 60
    counted = sample(app, "spendgate_redis_errors_total", kind=outcome.metric)
    assert counted == (2 if status == 503 else 0)


@pytest.mark.parametrize(
    ("kind", "decision", "fact"),
    [
        (BudgetUnavailableError, "unavailable", "unavailable"),
        (BudgetExceededError, "refused", "invalid"),
        (SpoolFullError, "invalid", "unavailable"),
        (IdempotencyConflictError, "conflict", "conflict"),
        (LeaseStateError, "invalid", "lease_state"),
        # The table says "storage" and "unavailable"; the counters have
        # always said "invalid" for these, and dashboards read them.
        (StorageError, "invalid", "invalid"),
        (LedgerUnavailableError, "invalid", "invalid"),
        (InvalidArgumentError, "invalid", "invalid"),
        (SpendgateError, "invalid", "invalid"),
    ],
    ids=lambda value: getattr(value, "__name__", value),
)
async def test_decision_and_fact_labels(
    kind: type[SpendgateError], decision: str, fact: str
) -> None:
    app = make_app(INSTANCES[kind])
    async with client_of(app) as client:
        for url in ("/v1/reserve", "/v1/credits"):
            body = {"user_id": "u", "amount": 1}
            assert (await client.post(url, json=body, headers=AUTH)).status_code >= 400
    refused = decision == "refused"
    labels = {
        "endpoint": "reserve",
        "outcome": decision,
        "scope": "user" if refused else "none",
        "window": "balance" if refused else "none",
    }
    assert sample(app, "spendgate_decisions_total", **labels) == 1
    assert sample(app, "spendgate_facts_total", endpoint="credits", outcome=fact) == 1


async def test_an_unexpected_exception_is_a_json_500() -> None:
    async with client_of(make_app(RuntimeError("a bug"))) as client:
        response = await client.post("/check", json={"user_id": "u"}, headers=AUTH)
    assert response.status_code == 500
    assert response.json() == {"detail": "internal error: RuntimeError"}
