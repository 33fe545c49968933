# Two entry points for a fresh machine: `make run` (train on the built-in game) and `make test`.
# Each step is guarded by a file it produces, so a second run reinstalls and rebuilds nothing.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEPS := $(VENV)/.deps-installed
CORE := tmrl/_core.abi3.so
RUST_SRC := $(shell find rust_core/src -name '*.rs') rust_core/Cargo.toml Cargo.toml
PYTEST_ARGS ?=

.PHONY: run test build deps lint rust-test pytest bench clean

run: $(CORE)
	$(VENV)/bin/tmrl run

test: $(CORE) lint rust-test pytest

build: $(CORE)

deps: $(DEPS)

$(PY):
	python3 -m venv $(VENV)

# pyproject.toml is the one list of dependencies; pip skips what is already satisfied (torch is several GB).
$(DEPS): pyproject.toml tools/requirements.py | $(PY)
	$(PY) tools/requirements.py pyproject.toml > $(VENV)/requirements.txt
	$(PIP) install --upgrade-strategy only-if-needed -r $(VENV)/requirements.txt "maturin>=1.5,<2"
	touch $@

$(CORE): $(RUST_SRC) $(DEPS)
	VIRTUAL_ENV=$(abspath $(VENV)) PATH=$(abspath $(VENV))/bin:$$PATH $(VENV)/bin/maturin develop --release --quiet
	touch $@

lint: $(CORE)
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	cargo clippy --workspace --lib --features python -- -D warnings
	$(VENV)/bin/ruff check tmrl tests bench tools
	$(VENV)/bin/ruff format --check tmrl tests bench tools
	$(PY) -m mypy.stubtest tmrl._core

rust-test:
	cargo test --workspace --release

pytest: $(CORE)
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(CORE)
	$(PY) -m bench.core
	$(PY) -m bench.relay
	$(PY) -m bench.train
	$(PY) -m bench.jitter

clean:
	rm -rf target $(CORE) .pytest_cache
