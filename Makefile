# Developer entry points. Every target creates .venv on first use and re-installs the project
# (editable, with dev extras) only when pyproject.toml is newer than .venv/.installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The dashboard's browser Socket.IO client, from the socket.io-client npm package (gitignored).
VENDOR_JS := api/static/vendor/socket.io.min.js

.PHONY: test lint demo bench clean install

test: lint
	$(BIN)/python -m pytest -q

lint: $(INSTALLED)
	$(BIN)/ruff check engine api tests benchmarks
	$(BIN)/mypy

demo: $(INSTALLED)
	$(BIN)/campaign-engine demo

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks

install: $(INSTALLED)

# Order-only on the interpreter: the venv's own timestamps must not trigger a re-install.
$(INSTALLED): pyproject.toml | $(BIN)/python $(VENDOR_JS)
	$(BIN)/pip install -e '.[dev]'
	touch $@

$(VENDOR_JS): package.json package-lock.json
	npm ci --no-audit --no-fund
	mkdir -p $(@D)
	cp node_modules/socket.io-client/dist/socket.io.min.js $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Removes caches and build output; keeps .venv and .data (the embedded database).
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
