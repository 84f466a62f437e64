# portal-gateway: `make run` serves the sandbox gateway, `make test` runs lint and the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test test-e2e test-latest lint bench format schema assets upgrade relock

# Installs exactly what requirements-dev.lock pins, every direct and transitive dependency
# with its hashes, then the project itself without resolving or fetching anything again: a
# fresh machine gets what the suite last passed with, not whatever was released since.
# `make upgrade` is the only way versions change (README: "Installs and upgrades").
COMPILE = $(BIN)/pip-compile -q --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links

$(STAMP): pyproject.toml requirements-dev.lock
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --require-hashes -r requirements-dev.lock
	$(BIN)/python -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

# resolve both locks anew (the newest releases pyproject.toml allows), then the whole suite
upgrade: $(STAMP)
	$(COMPILE) --upgrade --extra dev --output-file requirements-dev.lock pyproject.toml
	$(COMPILE) --upgrade --build-deps-for=wheel --output-file requirements.lock pyproject.toml
	$(MAKE) test

# after editing pyproject.toml's dependencies: the locks follow, every other pin kept
relock: $(STAMP)
	$(COMPILE) --extra dev --output-file requirements-dev.lock pyproject.toml
	$(COMPILE) --build-deps-for=wheel --output-file requirements.lock pyproject.toml

# the newest releases, unlocked, in a venv of their own: drift seen on purpose (not in CI)
test-latest: assets
	rm -rf $(VENV)-latest
	$(PYTHON) -m venv $(VENV)-latest
	$(VENV)-latest/bin/python -m pip install -q --upgrade pip
	$(VENV)-latest/bin/python -m pip install -q -e '.[dev]'
	$(VENV)-latest/bin/mypy gateway
	$(VENV)-latest/bin/pytest -q -p no:cacheprovider

assets: $(STAMP)
	$(BIN)/python scripts/fetch_assets.py

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
