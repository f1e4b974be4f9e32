# Postroom: `make run` installs and serves on the embedded default; `make test` installs and checks.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DATA   ?= ./var
STAMP  := $(VENV)/.installed
BENCH_ARGS ?=  # e.g. make bench BENCH_ARGS='-n 1000 --runs 2 --json out.json'
BENCH      ?= mx  # make bench BENCH=outbound = make bench-outbound; BENCH=rcpt|trace|scheduler: bench/scale.py
# BENCH=protection|protection-production|protection-stages: bench/protection_load.py builtin|production|stages
# BENCH=imap: bench/imap.py (Postroom's IMAP beside Dovecot on a 10,000-message folder; needs dovecot-imapd)

.PHONY: install run test lint typecheck unit bench bench-outbound bench-postfix bench-engines clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

run: install
	@test -f $(DATA)/postroom.toml || $(BIN)/postroom init $(DATA)
	$(BIN)/postroom -c $(DATA)/postroom.toml serve

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: install
	$(BIN)/mypy

# On every core; a module's tests stay in one process (--dist loadscope), so they share its servers.
unit: install
	$(BIN)/pytest -q -n auto --dist loadscope

test: install lint typecheck unit

bench-postfix:
	@command -v postfix >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix; }

# bench/protection_load.py production: Rspamd (with Redis), clamd and a caching resolver beside Rspamd
bench-engines:
	@for pkg in rspamd:/usr/bin/rspamd redis-server:/usr/bin/redis-server clamav-daemon:/usr/sbin/clamd \
	    unbound:/usr/sbin/unbound; do test -x $${pkg#*:} || missing="$$missing $${pkg%%:*}"; done; \
	if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; fi

SCALE_BENCHES := rcpt trace scheduler  # bench/scale.py, on the PostgreSQL server at 127.0.0.1:5432

ifeq ($(strip $(BENCH)),outbound)
bench: bench-outbound
else ifneq ($(filter $(strip $(BENCH)),$(SCALE_BENCHES)),)
bench: install
	$(BIN)/python bench/scale.py $(strip $(BENCH)) $(BENCH_ARGS)
else ifeq ($(strip $(BENCH)),protection)
bench: install bench-postfix
	$(BIN)/python bench/protection_load.py builtin --vs-postfix $(BENCH_ARGS)
else ifeq ($(strip $(BENCH)),protection-production)
bench: install bench-postfix bench-engines
	$(BIN)/python bench/protection_load.py production --vs-postfix $(BENCH_ARGS)
else ifeq ($(strip $(BENCH)),imap)
bench: install
	@test -x /usr/sbin/dovecot || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd; }
	$(BIN)/python bench/imap.py $(BENCH_ARGS)
else ifeq ($(strip $(BENCH)),protection-stages)
bench: install bench-engines
	$(BIN)/python bench/protection_load.py stages --engines $(BENCH_ARGS)
else
bench: install bench-postfix
	$(BIN)/python bench/mx_load.py --vs-postfix $(BENCH_ARGS)
endif

bench-outbound: install bench-postfix
	$(BIN)/python bench/outbound_relay.py --vs-postfix $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(DATA) .pytest_cache .mypy_cache .ruff_cache
