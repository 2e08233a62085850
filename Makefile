# Every target sets itself up: a fresh clone needs only python3 (>= 3.11).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
EXTRAS ?= dev,embedded,server,postgres,litellm

.PHONY: install demo test lint typecheck bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip uv
	@$(BIN)/uv pip install --python $(BIN)/python -q -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## the main job: a narrated walkthrough on the embedded default (no Redis needed)
demo: $(STAMP)
	@$(BIN)/spendgate demo

## the whole test suite, against the real Redis and Postgres and the embedded store,
## on every core (TEST_WORKERS=0: in this process alone)
TEST_WORKERS ?= auto
test: $(STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

## hot-path benchmark vs the Redis PING floor and coreason-budget, and a Redis Cluster
## section on servers of its own (BENCH_ARGS=--no-cluster skips it): bench/results/
bench: $(STAMP)
	@$(BIN)/uv pip install --python $(BIN)/python -q -e ".[$(EXTRAS),bench]"
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
