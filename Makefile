# Two commands matter (see README.md):  `make demo`  and  `make test`.
# Both create the virtual environment on first use; nothing else needs installing by hand.
# Installs come from the lock files, pinned with hashes (`make lock` re-resolves them):
# requirements.lock is what depmon runs with (the demo, the image); requirements-dev.lock adds the
# test and lint tools. depmon itself goes in editable, without resolving anything more.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
UV     := uv==0.13.9
# pytest-xdist workers for `make test`: most tests wait on loopback servers and daemons, not the
# CPU, so twice the cores keeps the machine busy (each worker has its own ports, tmp dirs and
# PostgreSQL server); `make test TEST_WORKERS=1` runs them one by one.
TEST_WORKERS ?= 4

.PHONY: demo test lint bench tools lock clean

# The stamps record which lock the venv was last installed from.
$(VENV)/.runtime: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@

$(VENV)/.dev: requirements-dev.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.lock
	$(BIN)/pip install --quiet --no-deps -e .
	@touch $@ $(VENV)/.runtime

## demo: set up and run the scripted demo against a simulated VA environment
demo: $(VENV)/.runtime
	$(BIN)/depmon demo

## test: set up and run the whole test suite, with the linters
test: $(VENV)/.dev tools
	$(BIN)/ruff check monitor probes tests deploy
	$(BIN)/ruff format --check monitor probes tests deploy
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --cov=monitor --cov=probes --cov-branch --cov-report=term:skip-covered

## tools: the external programs some tests use (promtool, prometheus, chromium, postgresql); installed when root
tools:
	@scripts/install-test-tools

## bench: `depmon bench`, depmon and blackbox_exporter (when installed) at 1,000 targets every 2 s (not in `make test`)
bench: $(VENV)/.runtime
	$(BIN)/depmon bench

## lock: re-resolve both lock files from pyproject.toml, with hashes, keeping the pins that still fit it;
##       `make lock UPGRADE=--upgrade` takes the newest versions its specifiers admit
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet '$(UV)'
	$(BIN)/uv pip compile pyproject.toml --universal --python-version 3.11 --generate-hashes \
	    $(UPGRADE) --custom-compile-command 'make lock' --quiet -o requirements.lock
	$(BIN)/uv pip compile pyproject.toml --extra dev --constraint requirements.lock --universal \
	    --python-version 3.11 --generate-hashes $(UPGRADE) --custom-compile-command 'make lock' --quiet \
	    -o requirements-dev.lock

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
