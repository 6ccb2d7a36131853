# Each target sets up its own virtual environment on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run demo test lint bench bench-portal bench-import bench-burst

$(BIN)/dunwise: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/dunwise

run: install
	$(BIN)/dunwise run

demo: install
	$(BIN)/dunwise demo

lint: install
	$(BIN)/ruff check .

test: install lint
	$(BIN)/pytest -q

bench: install
	$(BIN)/python bench/lifecycle.py

bench-portal: install
	$(BIN)/python bench/portal.py

bench-import: install
	$(BIN)/python bench/import.py

bench-burst: install
	$(BIN)/python bench/burst.py
