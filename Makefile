# The two commands a user needs are `make run` and `make test`; everything else supports them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
RUNTIME_STAMP := $(VENV)/.runtime-installed
DEV_STAMP := $(VENV)/.dev-installed
# Every venv made here first gets the current, hashed pip and setuptools (make/venv-tools.txt)
# instead of the old ones `python -m venv` seeds.
VENV_TOOLS_INSTALL := --quiet --disable-pip-version-check --require-hashes -r make/venv-tools.txt

.PHONY: setup run test lint bench clean docs-settings docs-charts

# The first `make run` installs for a minute with pip --quiet: say what is happening.
$(RUNTIME_STAMP): requirements.txt make/venv-tools.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null || { \
		echo "error: $(PYTHON) is missing or older than Python 3.11: install 3.11+ or run make PYTHON=/path/to/python3.11" >&2; exit 1; }
	@test -x $(BIN)/python || echo "==> creating the virtual environment $(VENV)/ with $$($(PYTHON) --version)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install $(VENV_TOOLS_INSTALL)
	@echo "==> installing requirements.txt into $(VENV)/ (pandas, scikit-learn, matplotlib, Google clients; about a minute the first time)"
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements.txt
	touch $@
	@echo "==> $(VENV)/ is ready"

$(DEV_STAMP): $(RUNTIME_STAMP) requirements-dev.txt
	@echo "==> installing requirements-dev.txt into $(VENV)/ (pytest, ruff, seaborn)"
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes -r requirements-dev.txt
	touch $@

setup: $(RUNTIME_STAMP)

run: setup
	@echo "==> clustering the built-in sample into output/ (progress below, one line per stage)"
	$(BIN)/python -m clustering run --out output

# The settings table of docs/configuration.md, regenerated from clustering/options.py (a test
# fails when it is stale).
docs-settings: setup
	$(BIN)/python -m clustering settings-table --page docs/configuration.md

# The chart pictures of the README and docs/analysis.md: the built-in sample's charts, shrunk
# (committed under docs/).
docs-charts: setup
	PYTHONPATH=. $(BIN)/python docs/make_charts.py docs

include make/*.mk

test: $(DEV_STAMP) $(TEST_TOOLS)
	$(BIN)/python -m pytest

lint: $(DEV_STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The warehouse cases run on the local emulators, which make/emulators.mk builds.
bench: $(DEV_STAMP) $(GCS_STAMP) $(BIGQUERY_STAMP)
	$(BIN)/python bench/bench.py

clean:
	rm -rf output .pytest_cache .ruff_cache
