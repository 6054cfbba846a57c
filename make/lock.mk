# `make lock`: regenerate the hashed lock files from their short top-level files with
# pip-tools. requirements.txt (what the function installs) from requirements.in,
# requirements-dev.txt (the test venv: the same pins plus the dev tools) from
# requirements-dev.in, make/venv-tools.txt (pip and setuptools of every venv) from
# make/venv-tools.in, and make/zetasql-requirements.txt (grpcio-tools of .tools/zetasql) from
# make/zetasql-requirements.in. pip-compile keeps the versions a lock already has unless the
# top-level file changed them (`make lock LOCK_ARGS=--upgrade` moves everything to the newest).
# PIP_CONFIG_FILE=/dev/null: the lock is resolved against PyPI alone, so no local index or
# wheel folder of this machine ends up in it. tests/test_requirements.py fails when a lock
# and its top-level file, or the lock and the installed .venv, disagree.

LOCK_TOOL ?= .tools/pip-tools
LOCK_STAMP := $(LOCK_TOOL)/.installed
PIP_COMPILE := PIP_CONFIG_FILE=/dev/null $(LOCK_TOOL)/bin/pip-compile --quiet --generate-hashes \
	--no-emit-index-url --no-emit-find-links --strip-extras $(LOCK_ARGS)

.PHONY: lock
lock: $(LOCK_STAMP)
	$(PIP_COMPILE) --output-file requirements.txt requirements.in
	$(PIP_COMPILE) --output-file requirements-dev.txt requirements-dev.in
	$(PIP_COMPILE) --allow-unsafe --output-file make/venv-tools.txt make/venv-tools.in
	$(PIP_COMPILE) --allow-unsafe --output-file make/zetasql-requirements.txt make/zetasql-requirements.in

$(LOCK_STAMP): make/pip-tools-requirements.txt make/venv-tools.txt
	rm -rf $(LOCK_TOOL)
	$(PYTHON) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(LOCK_TOOL)/bin/pip install --quiet --disable-pip-version-check --no-deps -r $<
	touch $@
