# Two commands from a fresh clone: `make demo` and `make test`. Only Python 3.11+ and make needed.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo up test test-external lint typecheck protos proto-check buf-lint buf-breaking \
        unit integration bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "dwf needs Python 3.11+"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

demo: install
	$(BIN)/dwf demo

up: install
	$(BIN)/dwf up

protos: install
	$(BIN)/python scripts/gen_protos.py

proto-check: install
	$(BIN)/python scripts/gen_protos.py --check

buf-lint: install
	cd proto && ../$(BIN)/buf lint && ../$(BIN)/buf format --diff --exit-code

buf-breaking: install
	BUF=$(BIN)/buf scripts/buf_breaking.sh

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

unit: install
	$(BIN)/pytest tests/unit -q

integration: install
	$(BIN)/pytest tests/integration -q

# The same integration tests against the Postgres and NATS this machine already runs.
test-external: install
	DWF_DATABASE_URL=$${DWF_DATABASE_URL:-postgresql://postgres@127.0.0.1:5432/postgres} \
	DWF_NATS_URL=$${DWF_NATS_URL:-nats://127.0.0.1:4222} $(BIN)/pytest tests/integration -q

test: install proto-check buf-lint buf-breaking lint typecheck
	$(BIN)/pytest -q

bench: install
	$(BIN)/python -m bench.bench_outbox
	$(BIN)/python -m bench.bench_inventory
	$(BIN)/python -m bench.bench_notifications
	$(BIN)/python -m bench.bench_gateway
	$(BIN)/python -m bench.bench_fulfillment

clean:
	rm -rf $(VENV) .dwf .pytest_cache .mypy_cache .ruff_cache
