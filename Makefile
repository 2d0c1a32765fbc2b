# Two commands on a fresh machine:  make demo   and   make test   (see README.md)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo writes inside .cache (ignored by git and by the collection build).
BACKUP_ROOT ?= $(CURDIR)/.cache/demo/backups

.PHONY: venv venv-lint venv-floor server server-stop demo test unit integration sanity ee-context bench bench-restore bench-sharded bench-retention bench-verify bench-all clean

# Two more venvs for tools/sanity.py, each from its own pinned requirements file: the collection
# linters (galaxy-importer, ansible-lint, antsibull-docs, ansible-builder), whose pins clash with
# requirements-dev.txt, and the oldest ansible-core of meta/runtime.yml's requires_ansible.
LINT_VENV := .venv-lint
FLOOR_VENV := .venv-floor

# $(call make-venv,DIR,REQUIREMENTS): a venv in DIR with REQUIREMENTS installed, stamped DIR/.installed
define make-venv
	$(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install --quiet --upgrade pip
	$(1)/bin/python -m pip install --quiet -r $(2)
	touch $(1)/.installed
endef

$(STAMP): requirements.txt requirements-dev.txt
	$(call make-venv,$(VENV),requirements-dev.txt)

venv: $(STAMP)

$(LINT_VENV)/.installed: requirements-lint.txt
	$(call make-venv,$(LINT_VENV),requirements-lint.txt)

venv-lint: $(LINT_VENV)/.installed

$(FLOOR_VENV)/.installed: requirements-floor.txt
	$(call make-venv,$(FLOOR_VENV),requirements-floor.txt)

venv-floor: $(FLOOR_VENV)/.installed

## start the local test server in the background; the last line printed is its URI
server: venv
	@$(PY) tools/testserver.py start

server-stop: venv
	@$(PY) tools/testserver.py stop

## start a local server, load sample data, back it up with playbooks/backup.yml
demo: venv
	@$(PY) tools/demo.py --backup-root $(BACKUP_ROOT)

## every test: unit, integration (real server), protocol, ansible-doc and sanity
## (FerretDB is built only when no mongod is found: tools/testserver.py prepare)
test: venv venv-lint venv-floor
	$(PY) tools/testserver.py prepare >/dev/null
	$(PY) -m pytest
	$(PY) tools/sanity.py $(SANITY_ARGS)

unit: venv
	$(PY) -m pytest tests/unit

integration: venv
	$(PY) -m pytest tests/integration

## every static check (tools/sanity.py --list); SANITY_ARGS="--skip ansible-test-floor" leaves one out
sanity: venv venv-lint venv-floor
	$(PY) tools/sanity.py $(SANITY_ARGS)

## build context of the execution environment (execution-environment.yml) in .cache/ee/context
ee-context: venv-lint
	rm -rf .cache/ee && mkdir -p .cache/ee/collection/mongodb_backup
	$(LINT_VENV)/bin/ansible-galaxy collection build --output-path .cache/ee
	tar -xzf .cache/ee/dbops-mongodb_backup-*.tar.gz -C .cache/ee/collection/mongodb_backup
	$(LINT_VENV)/bin/ansible-builder create --file execution-environment.yml --context .cache/ee/context \
	    --output-filename Containerfile

bench: venv
	$(PY) benchmarks/dump_benchmark.py

bench-restore: venv
	$(PY) benchmarks/restore_benchmark.py

# A sharded-cluster backup against each replica set dumped alone (three test servers, mockupdb mongos).
bench-sharded: venv
	$(PY) benchmarks/sharded_benchmark.py

# The retention plan of a 10,007-entry catalog (no server): under a second of engine time.
bench-retention: venv
	$(PY) benchmarks/retention_benchmark.py --check

# What the content hash costs a dump, and a verification against a plain restore (two test servers).
bench-verify: venv
	$(PY) benchmarks/verify_benchmark.py

# Dump and restore against the real tools in one run, on one server: BENCH_MB MiB (default 1 GiB),
# output and JSON in BENCH_OUT. The oplog replay part runs with make bench-restore.
BENCH_MB ?= 1024
BENCH_OUT ?= .cache/benchmark/results
bench-all: venv
	mkdir -p $(BENCH_OUT)
	$(PY) benchmarks/dump_benchmark.py --size-mb $(BENCH_MB) --keep-server --json-out $(BENCH_OUT)/dump.json \
	    > $(BENCH_OUT)/dump.txt; status=$$?; cat $(BENCH_OUT)/dump.txt; \
	    if [ $$status -eq 0 ]; then $(PY) benchmarks/restore_benchmark.py --size-mb $(BENCH_MB) --reuse-server \
	    --skip-oplog --json-out $(BENCH_OUT)/restore.json > $(BENCH_OUT)/restore.txt; status=$$?; \
	    cat $(BENCH_OUT)/restore.txt; fi; \
	    $(PY) tools/testserver.py stop --state .cache/benchmark/server.json; exit $$status

clean:
	-$(PY) tools/testserver.py stop
	rm -rf .cache $(VENV) $(LINT_VENV) $(FLOOR_VENV)
