# The README's two commands (and the benchmarks). Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
REQS := requirements/base.txt requirements/dev.txt requirements/agent.txt
# the agent's distribution, installed editable from the checkout: its console scripts
# (mse-agent, mse-setup, gethainfo, getserverinfo) land in .venv/bin; re-installed when a
# pyproject or the release (nodeagent/__init__.py) changes
AGENT_DIST := distributions/agent
DIST_FILES := pyproject.toml $(AGENT_DIST)/pyproject.toml nodeagent/__init__.py

# `make run` is a development machine: DEBUG on, embedded defaults unless the
# environment names PostgreSQL/Redis.
RUN_ENV := DEBUG=$${DEBUG:-1}

.PHONY: run test lint bench venv migrate demo-users clean chromium wheels ldap

$(STAMP): $(REQS) $(DIST_FILES)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements/dev.txt
	$(PY) -m pip install --quiet --no-deps --editable $(AGENT_DIST)
	@touch $(STAMP)

venv: $(STAMP)

migrate: venv
	$(RUN_ENV) $(PY) manage.py migrate --no-input

demo-users: migrate
	$(RUN_ENV) $(PY) manage.py demo_users

# The demo's alerts go to a local address: with no EMAIL_URL they land in var/mail/
# (the Reports page's Mailbox shows them); nothing leaves the machine.
run: demo-users
	$(RUN_ENV) MSEPORTAL_ALERT_RECIPIENTS=$${MSEPORTAL_ALERT_RECIPIENTS-noc@localhost} \
	  $(VENV)/bin/honcho --procfile Procfile.dev --app-root . start

# The browser tests drive Debian's Chromium (never a downloaded one), and the real-network
# tests (hosts in network namespaces, as root) announce VIPs with Debian's arping: install
# them where we can.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the browser tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "note: no chromium here (apt-get install chromium): the browser tests will fail saying so"; fi; }
	@command -v arping >/dev/null 2>&1 && command -v ping >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's iputils-arping and iputils-ping for the network-namespace tests"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iputils-arping iputils-ping >/dev/null \
	      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iputils-arping iputils-ping >/dev/null; }; \
	  else echo "note: the network-namespace tests need root and arping (apt-get install iputils-arping): they will be skipped, saying so"; fi; }
	@ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's faketime for the clock tests (agents whose clocks are off)"; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null \
	      || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime >/dev/null; }; \
	  else echo "note: the clock tests need libfaketime (apt-get install faketime): they will be skipped, saying so"; fi; }

# LDAP sign-in is optional (requirements/ldap.txt): python-ldap builds against OpenLDAP's
# headers, and the tests run Debian's slapd. Installed where we can (as root: apt-get, with
# slapd's own service kept from starting); elsewhere the LDAP tests skip, saying why.
LDAP_STAMP := $(VENV)/.ldap-installed
$(LDAP_STAMP): requirements/ldap.txt $(STAMP)
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    ! { [ -x /usr/sbin/slapd ] && [ -e /usr/include/ldap.h ] && [ -e /usr/include/sasl/sasl.h ]; }; then \
	  echo "installing Debian's slapd, libldap2-dev and libsasl2-dev for LDAP sign-in and its tests"; \
	  guard=; if [ ! -e /usr/sbin/policy-rc.d ]; then printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; \
	    chmod +x /usr/sbin/policy-rc.d; guard=1; fi; \
	  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd libldap2-dev libsasl2-dev >/dev/null \
	    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slapd libldap2-dev libsasl2-dev >/dev/null; }; }; \
	  [ -z "$$guard" ] || rm -f /usr/sbin/policy-rc.d; \
	fi
	@if $(PY) -m pip install --quiet -r requirements/ldap.txt; then touch $(LDAP_STAMP); \
	else echo "note: python-ldap did not build (apt-get install libldap2-dev libsasl2-dev): the LDAP tests will skip, saying so"; fi

ldap: $(LDAP_STAMP)

# The habits: lint and format (ruff), types (mypy, on the typed parts: pyproject.toml),
# and no model change without its migration. `make test` runs them first.
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(RUN_ENV) $(PY) manage.py makemigrations --check --dry-run

# Two passes: most of the suite on TEST_WORKERS processes (pytest-xdist; a module stays on
# one worker), then the timing-sensitive tests (marked serial) alone, so another test's load
# never stretches an outage or a failover they measure. Both run; the first failure's code wins.
TEST_WORKERS ?= 2
test: venv chromium ldap lint
	@status=0; \
	$(RUN_ENV) $(PY) -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not serial" $(PYTEST_ARGS) || \
	  { code=$$?; [ $$code -eq 5 ] || status=$$code; }; \
	$(RUN_ENV) $(PY) -m pytest -p no:xdist -m serial $(PYTEST_ARGS) || \
	  { code=$$?; [ $$code -eq 5 ] || [ $$status -ne 0 ] || status=$$code; }; \
	exit $$status

bench: venv
	@for f in bench/bench_*.py; do [ -e "$$f" ] || continue; echo "# $$f"; $(RUN_ENV) $(PY) $$f || exit 1; done

# The two wheels (mse-node-agent for the appliances, mseportal for the server) into dist/.
wheels: venv
	$(PY) distributions/build.py --out dist

clean:
	rm -rf var staticfiles .pytest_cache dist
