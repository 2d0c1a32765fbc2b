# Two commands on a fresh machine:  make demo   and   make test   (see README.md)
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BACKUP_ROOT ?= $(CURDIR)/backups

.PHONY: venv server server-stop demo test unit integration sanity bench bench-restore clean

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

clean:
	-$(PY) tools/testserver.py stop
	rm -rf .cache $(VENV)
