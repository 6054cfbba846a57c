# Debian's Chromium for the report's rendering test (tests/test_report.py). It is a system
# package, not a pip one: installed with apt-get only when absent, then proved to start and
# draw offline with the flags the tests use, so a broken browser fails here, not mid-test.
# The stamp lives in the git-ignored .tools/ like the emulators'.

CHROMIUM_TOOL := .tools/chromium
CHROMIUM_STAMP := $(CHROMIUM_TOOL)/.installed
# Off the network: no background requests, updates, sync or QUIC; a fresh profile each time.
CHROMIUM_FLAGS := --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
	--disable-background-networking --disable-component-update --disable-sync

TEST_TOOLS += $(CHROMIUM_STAMP)

.PHONY: chromium
chromium: $(CHROMIUM_STAMP)

$(CHROMIUM_STAMP): make/chromium.mk
	command -v chromium >/dev/null 2>&1 || { \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium; }
	rm -rf $(CHROMIUM_TOOL) && mkdir -p $(CHROMIUM_TOOL)/profile
	chromium $(CHROMIUM_FLAGS) --user-data-dir=$(abspath $(CHROMIUM_TOOL))/profile \
		--window-size=200,100 --screenshot=$(abspath $(CHROMIUM_TOOL))/check.png \
		"data:text/html,<p>ok</p>" >/dev/null 2>&1
	test -s $(CHROMIUM_TOOL)/check.png || { echo "error: chromium did not draw a page" >&2; exit 1; }
	rm -rf $(CHROMIUM_TOOL)/profile $(CHROMIUM_TOOL)/check.png
	touch $@
