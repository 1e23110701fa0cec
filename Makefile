# Two entry points (see README): `make demo` and `make test`. Each creates its own venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check -q

.PHONY: demo test lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.base: pyproject.toml | $(BIN)/python
	$(PIP) install -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[test,mpi,plot,hydra]'
	touch $@ $(VENV)/.base

demo: $(VENV)/.base
	$(BIN)/gridman grid demo --backend local --interval 1
	$(BIN)/gridman info --sig $$($(BIN)/gridman grid demo --backend local --json --no-monitor 2>/dev/null | $(BIN)/python -c 'import json,sys; print(json.load(sys.stdin)[0]["sig"])')
	@echo
	@echo "Done. gridman is installed in .venv, which is not on your PATH. To go on:"
	@echo "  . .venv/bin/activate        # then: gridman grid demo, gridman info --sig SIG"
	@echo "  gridman serve demo          # the web view: table, curves, parallel coordinates"
	@echo "  python examples/search.py   # an Evaluator search loop (see README)"

lint: $(VENV)/.test
	$(BIN)/ruff check gridman tests examples bench
	$(BIN)/ruff format --check gridman tests examples bench

typecheck: $(VENV)/.test
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.test
	$(BIN)/python bench/startup.py

clean:
	rm -rf $(VENV) outputs .pytest_cache .mypy_cache .ruff_cache
