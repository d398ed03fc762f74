# Two commands matter (see README.md):  `make demo`  and  `make test`.
# Both create the virtual environment on first use; nothing else needs installing by hand.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# pytest-xdist workers for `make test`: most tests wait on loopback servers and daemons, not the
# CPU, so twice the cores keeps the machine busy (each worker has its own ports, tmp dirs and
# PostgreSQL server); `make test TEST_WORKERS=1` runs them one by one.
TEST_WORKERS ?= 4

.PHONY: demo test lint bench tools clean

$(BIN)/depmon: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

## demo: set up and run the scripted demo against a simulated VA environment
demo: $(BIN)/depmon
	$(BIN)/depmon demo

## test: set up and run the whole test suite, with the linters
test: $(BIN)/depmon tools
	$(BIN)/ruff check monitor probes tests deploy
	$(BIN)/ruff format --check monitor probes tests deploy
	$(BIN)/mypy
	$(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup --cov=monitor --cov=probes --cov-branch --cov-report=term:skip-covered

## tools: the external programs some tests use (promtool, prometheus, chromium, postgresql); installed when root
tools:
	@scripts/install-test-tools

## bench: `depmon bench`, depmon and blackbox_exporter (when installed) at 1,000 targets every 2 s (not in `make test`)
bench: $(BIN)/depmon
	$(BIN)/depmon bench

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .mypy_cache .ruff_cache
