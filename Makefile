# Developer entry points. Every target creates .venv on first use and re-installs the project
# (editable, with dev extras) only when pyproject.toml is newer than .venv/.installed.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed

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
$(INSTALLED): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[dev]'
	touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Removes caches and build output; keeps .venv and .data (the embedded database).
clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -exec rm -rf {} +
