# coldtail: `make run` starts the collector on the default pipeline; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test-servers run test lint bench layer clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# Real servers the tests run against. Their tests skip, saying why, where they cannot install.
test-servers:
	@command -v prometheus >/dev/null || { \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
		>/dev/null; } || echo "prometheus could not be installed: its tests will be skipped"

run: install
	$(BIN)/coldtail run --config config/default.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint test-servers
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

# dist/coldtail-layer.zip: the Lambda layer (instrumentation, exec wrapper, extension).
layer: install
	$(BIN)/python deploy/lambda/build_layer.py

clean:
	rm -rf $(VENV) data dist build *.egg-info
