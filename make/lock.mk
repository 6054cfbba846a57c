# `make lock`: regenerate the hashed lock files from their short top-level files with
# pip-tools. requirements.txt (what the function installs) from requirements.in,
# requirements-dev.txt (the test venv: the same pins plus the dev tools) from
# requirements-dev.in, and make/venv-tools.txt (pip and setuptools of every venv) from
# make/venv-tools.in; and the locks of every tool environment under .tools/ (pip-tools itself,
# the emulators, checkov, terraform, zetasql) from their .in files, each installed with
# --require-hashes.
# The BigQuery emulator runs on Python 3.13, so its locks are resolved by a second pip-tools
# on that Python (.tools/pip-tools-313). pip-compile keeps the versions a lock already has
# unless the top-level file changed them (`make lock LOCK_ARGS=--upgrade` moves everything to
# the newest).
# PIP_CONFIG_FILE=/dev/null: the lock is resolved against PyPI alone, so no local index or
# wheel folder of this machine ends up in it. tests/test_requirements.py fails when a lock
# and its top-level file, or the lock and the installed .venv, disagree.

LOCK_TOOL ?= .tools/pip-tools
LOCK_STAMP := $(LOCK_TOOL)/.installed
LOCK_TOOL_313 ?= .tools/pip-tools-313
LOCK_STAMP_313 := $(LOCK_TOOL_313)/.installed
PIP_COMPILE_FLAGS := --quiet --generate-hashes --no-emit-index-url --no-emit-find-links \
	--strip-extras $(LOCK_ARGS)
PIP_COMPILE := PIP_CONFIG_FILE=/dev/null $(LOCK_TOOL)/bin/pip-compile $(PIP_COMPILE_FLAGS)
PIP_COMPILE_313 := PIP_CONFIG_FILE=/dev/null $(LOCK_TOOL_313)/bin/pip-compile $(PIP_COMPILE_FLAGS)
# pip-tools' own lock pins its dependencies but not pip and setuptools, which
# make/venv-tools.txt installs first.
LOCK_TOOL_INSTALL := --quiet --disable-pip-version-check --no-deps --require-hashes \
	-r make/pip-tools-requirements.txt

.PHONY: lock
lock: $(LOCK_STAMP) $(LOCK_STAMP_313)
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in
	$(PIP_COMPILE) --allow-unsafe --output-file make/venv-tools.txt make/venv-tools.in
	$(PIP_COMPILE) --output-file make/pip-tools-requirements.txt make/pip-tools-requirements.in
	$(PIP_COMPILE) --output-file make/gcs-emulator-requirements.txt make/gcs-emulator-requirements.in
	$(PIP_COMPILE) --output-file terraform/tools/terraform-requirements.txt terraform/tools/terraform-requirements.in
	$(PIP_COMPILE) --output-file terraform/tools/checkov-requirements.txt terraform/tools/checkov-requirements.in
	$(PIP_COMPILE_313) --unsafe-package duckdb \
		--output-file make/bigquery-emulator-requirements.txt make/bigquery-emulator-requirements.in
	$(PIP_COMPILE_313) --output-file make/bigquery-duckdb-requirements.txt make/bigquery-duckdb-requirements.in
	$(PIP_COMPILE) --allow-unsafe --output-file make/zetasql-requirements.txt make/zetasql-requirements.in

$(LOCK_STAMP): make/pip-tools-requirements.txt make/venv-tools.txt
	rm -rf $(LOCK_TOOL)
	$(PYTHON) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(LOCK_TOOL)/bin/pip install $(LOCK_TOOL_INSTALL)
	touch $@

# PYTHON313: make/emulators.mk finds it.
$(LOCK_STAMP_313): make/pip-tools-requirements.txt make/venv-tools.txt
	@test -n "$(PYTHON313)" || { echo "error: the BigQuery emulator's lock needs Python 3.13: install it (e.g. 'pyenv install 3.13.0') or run make with PYTHON313=/path/to/python3.13" >&2; exit 1; }
	rm -rf $(LOCK_TOOL_313)
	$(PYTHON313) -m venv $(LOCK_TOOL_313)
	$(LOCK_TOOL_313)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(LOCK_TOOL_313)/bin/pip install $(LOCK_TOOL_INSTALL)
	touch $@
