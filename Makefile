# Two commands on a fresh machine:  make demo   and   make test   (see README.md)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKUP_ROOT ?= $(CURDIR)/backups

.PHONY: venv server server-stop demo test unit integration sanity bench bench-restore bench-all clean

$(STAMP): requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

venv: $(STAMP)

## start the local test server in the background; the last line printed is its URI
server: venv
	@$(PY) tools/testserver.py start

server-stop: venv
	@$(PY) tools/testserver.py stop

## start a local server, load sample data, back it up with playbooks/backup.yml
demo: venv
	@$(PY) tools/demo.py --backup-root $(BACKUP_ROOT)

## every test: unit, integration (real server), protocol, ansible-doc and sanity
test: venv
	$(PY) tools/testserver.py build >/dev/null
	$(PY) -m pytest
	$(PY) tools/sanity.py

unit: venv
	$(PY) -m pytest tests/unit

integration: venv
	$(PY) -m pytest tests/integration

sanity: venv
	$(PY) tools/sanity.py

bench: venv
	$(PY) benchmarks/dump_benchmark.py

bench-restore: venv
	$(PY) benchmarks/restore_benchmark.py

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
	rm -rf .cache $(VENV)
