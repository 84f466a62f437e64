# portal-gateway: `make run` serves the sandbox gateway, `make test` runs lint and the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-e2e lint bench format schema assets

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

assets: $(STAMP)
	$(BIN)/python scripts/fetch_graphiql.py

run: assets
	$(BIN)/portal-gateway serve

lint: $(STAMP)
	$(BIN)/ruff check gateway tests bench scripts
	$(BIN)/ruff format --check gateway tests bench scripts
	$(BIN)/mypy gateway
	$(BIN)/lint-imports

test: assets lint
	$(BIN)/pytest -q -p no:cacheprovider

# the real-client tests alone (Apollo Gateway, GraphiQL in Chromium, Apollo Client); they
# install their npm packages into tests/e2e/.node/ and skip, unless CI=true, without Node/Chromium
test-e2e: assets
	$(BIN)/pytest -q -p no:cacheprovider tests/e2e

# fake providers, the gateway and wrk in three processes; prints the table and writes
# bench/results/latest.json (bench/README.md). Options: make bench BENCH_ARGS="--quick"
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)

format: $(STAMP)
	$(BIN)/ruff format gateway tests bench scripts
	$(BIN)/ruff check --fix gateway tests bench scripts

schema: $(STAMP)
	$(BIN)/portal-gateway export-schema > schema.graphql
