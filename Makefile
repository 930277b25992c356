# coldtail: `make run` starts the collector on the default pipeline; `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUN_STAMP := $(VENV)/.installed-run
# Quiet installs: setuptools prints a banner on every editable install, as a Python warning.
PIP := PYTHONWARNINGS=ignore $(BIN)/python -m pip --disable-pip-version-check

.PHONY: install test-servers lambda-runtimes run test lint fmt bench soak fuzz layer clean

# Everything, the dev extras included (tests, lint), for `make test` and the other targets.
install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[dev]'
	touch $(STAMP) $(RUN_STAMP)

# What running needs only, editable so that `make run` runs the tree as it is.
$(RUN_STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing coldtail into $(VENV)"
	@$(PIP) install --quiet -e .
	@touch $(RUN_STAMP)

# Real servers the tests run against. Their tests skip, saying why, where they cannot install.
test-servers:
	@command -v prometheus >/dev/null || { \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus \
		>/dev/null; } || echo "prometheus could not be installed: its tests will be skipped"
	@command -v chromium >/dev/null || { \
		DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium \
		>/dev/null; } || echo "chromium could not be installed: the page's browser test will be skipped"

# The Python runtimes the layer claims, for the emulator: one venv per pyenv interpreter with the
# runtime client (awslambdaric) and the OpenTelemetry API. Their tests skip where pyenv lacks one.
LAMBDA_PYTHONS ?= 3.12 3.13
lambda-runtimes:
	@for v in $(LAMBDA_PYTHONS); do \
		venv=.venv-lambda/python$$v; \
		python=$$(ls -d $${PYENV_ROOT:-$$HOME/.pyenv}/versions/$$v.*/bin/python3 2>/dev/null | tail -1); \
		if [ -z "$$python" ]; then echo "no CPython $$v in pyenv: its runtime tests will be skipped"; \
		elif [ ! -f $$venv/.installed ]; then \
			$$python -m venv $$venv && \
			$$venv/bin/python -m pip install --quiet awslambdaric opentelemetry-api && \
			touch $$venv/.installed; \
		fi; \
	done

run: $(RUN_STAMP)
	$(BIN)/coldtail run --config config/default.yaml

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python tools/import_cycles.py collector instrumentation emulator
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff check --fix --quiet .
	$(BIN)/ruff format --quiet .

test: lint test-servers lambda-runtimes
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench

# The collector's RSS under 5 minutes of saturating load (bench/soak.py).
soak: install
	$(BIN)/python -m bench.soak

# The fuzz tests (tests/fuzz) with 10,000 examples each instead of the suite's 150, untimed.
fuzz: install
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -q --timeout=0 tests/fuzz

# dist/coldtail-layer-<runtime>-<arch>.zip: the Lambda layer (instrumentation, exec wrapper,
# extension) for each runtime and architecture; e.g. `make layer RUNTIMES=python3.13 ARCHS=arm64`.
RUNTIMES ?= python3.12 python3.13 python3.14
ARCHS ?= x86_64 arm64
layer: install
	$(BIN)/python deploy/lambda/build_layer.py --runtimes $(RUNTIMES) --archs $(ARCHS)

clean:
	rm -rf $(VENV) .venv-lambda data dist build *.egg-info
