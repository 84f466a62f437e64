# portal-gateway: `make run` serves the sandbox gateway, `make test` runs lint and the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-e2e lint bench format schema assets lock

# Installs exactly what requirements.lock pins (every direct and transitive dependency), then
# the project itself without resolving anything again: a fresh machine gets what the suite
# was last run with, not whatever was released since.
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q 'pip==26.3'
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

# after a change to pyproject.toml's dependencies: resolve anew, then run `make test`
lock:
	rm -rf $(VENV)-lock
	$(PYTHON) -m venv $(VENV)-lock
	$(VENV)-lock/bin/python -m pip install -q 'pip==26.3'
	$(VENV)-lock/bin/python -m pip install -q -e '.[dev]'
	{ sed -n '1,2p' requirements.lock; $(VENV)-lock/bin/python -m pip freeze --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	rm -rf $(VENV)-lock

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
