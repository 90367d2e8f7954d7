# Developer entry points. Every target creates .venv on first use and re-installs the project
# (editable, with dev extras) only when pyproject.toml is newer than .venv/.installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# Browser assets from npm packages, copied into api/static/vendor/ (gitignored): the dashboard's
# Socket.IO client (socket.io-client) and the /docs API reference (swagger-ui-dist).
VENDOR := api/static/vendor
VENDOR_FILES := $(VENDOR)/socket.io.min.js $(VENDOR)/swagger-ui-bundle.js $(VENDOR)/swagger-ui.css
# npm ci (re)writes this file on every install: it stands for node_modules being current.
NODE_MODULES := node_modules/.package-lock.json

.PHONY: test lint demo bench clean install

test: lint
	$(BIN)/python -m pytest -q

lint: $(INSTALLED)
	$(BIN)/ruff check engine api tests benchmarks
	$(BIN)/mypy
	$(BIN)/lint-imports

demo: $(INSTALLED)
	$(BIN)/campaign-engine demo

bench: $(INSTALLED)
	$(BIN)/python -m benchmarks --scenario all

install: $(INSTALLED)

# Order-only on the interpreter: the venv's own timestamps must not trigger a re-install.
$(INSTALLED): pyproject.toml | $(BIN)/python $(VENDOR_FILES)
	$(BIN)/pip install -e '.[dev]'
	touch $@

# --ignore-scripts: only files are copied out of these packages; none needs an install script.
$(NODE_MODULES): package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts
	touch $@

$(VENDOR)/socket.io.min.js: $(NODE_MODULES)
	mkdir -p $(@D)
	cp node_modules/socket.io-client/dist/socket.io.min.js $@

$(VENDOR)/swagger-ui-bundle.js $(VENDOR)/swagger-ui.css: $(NODE_MODULES)
	mkdir -p $(@D)
	cp node_modules/swagger-ui-dist/$(@F) $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Removes caches and build output; keeps .venv and .data (the embedded database).
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .import_linter_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
