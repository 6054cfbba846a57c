# The google provider's schema, offline: no Terraform registry is reachable here, so
# `terraform validate` cannot run, but the npm package @cdktf/provider-google is generated from
# the provider's schema (16.12.1 <- google provider 6.50.0). tests/test_terraform.py reads each
# resource's arguments and blocks from its lib/<resource>/index.js (synthesizeHclAttributes)
# and which are required from index.d.ts, and checks every resource in terraform/ against
# them. Only those two files per resource are unpacked; npm verifies the tarball's integrity.

PROVIDER_SCHEMA_TOOL ?= .tools/provider-schema
PROVIDER_SCHEMA_STAMP := $(PROVIDER_SCHEMA_TOOL)/.installed
PROVIDER_SCHEMA_VERSION := 16.12.1

TEST_TOOLS += $(PROVIDER_SCHEMA_STAMP)

.PHONY: provider-schema clean-provider-schema
provider-schema: $(PROVIDER_SCHEMA_STAMP)

$(PROVIDER_SCHEMA_STAMP): make/provider-schema.mk
	rm -rf $(PROVIDER_SCHEMA_TOOL)
	mkdir -p $(PROVIDER_SCHEMA_TOOL)
	cd $(PROVIDER_SCHEMA_TOOL) && npm pack --silent --no-fund --no-audit \
		@cdktf/provider-google@$(PROVIDER_SCHEMA_VERSION) >/dev/null
	tar -xzf $(PROVIDER_SCHEMA_TOOL)/cdktf-provider-google-$(PROVIDER_SCHEMA_VERSION).tgz \
		-C $(PROVIDER_SCHEMA_TOOL) --wildcards 'package/package.json' \
		'package/lib/*/index.js' 'package/lib/*/index.d.ts'
	rm $(PROVIDER_SCHEMA_TOOL)/cdktf-provider-google-$(PROVIDER_SCHEMA_VERSION).tgz
	grep -q '"version": "$(PROVIDER_SCHEMA_VERSION)"' $(PROVIDER_SCHEMA_TOOL)/package/package.json \
		|| { echo "error: $(PROVIDER_SCHEMA_TOOL) is not @cdktf/provider-google $(PROVIDER_SCHEMA_VERSION)" >&2; exit 1; }
	touch $@

clean-provider-schema:
	rm -rf $(PROVIDER_SCHEMA_TOOL)
