# perdura: `make demo` and `make test` work on a fresh machine; they create .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-thorough lint typecheck bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

# The web UI's end-to-end test drives Debian's chromium headless (no browser download).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get install -y chromium >/dev/null 2>&1 || \
	  (apt-get update >/dev/null 2>&1 && apt-get install -y chromium >/dev/null 2>&1) || \
	  echo "could not install Debian's chromium: the web UI test will fail"

test: $(STAMP) $(CHROMIUM)
	$(BIN)/ruff check history engine sdk tests benchmarks examples
	$(BIN)/mypy
	HYPOTHESIS_PROFILE=ci $(BIN)/pytest

test-thorough: $(STAMP)
	HYPOTHESIS_PROFILE=thorough $(BIN)/pytest tests/property

lint: $(STAMP)
	$(BIN)/ruff check history engine sdk tests benchmarks examples

typecheck: $(STAMP)
	$(BIN)/mypy

# The peers (DBOS, LangGraph), the plot and RSS come from the `bench` extra; without it (no
# network) the suite still runs and says which peers it skipped. BENCH_ARGS: --quick, --only NAME.
$(VENV)/.installed-bench: $(STAMP) pyproject.toml
	if $(BIN)/pip install --quiet -e '.[dev,bench]'; then touch $@; \
	else echo "bench extra not installed: peers will be skipped"; fi

bench: $(STAMP) $(VENV)/.installed-bench
	$(BIN)/python benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build *.egg-info
