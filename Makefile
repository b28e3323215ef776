# medssl: every target sets up its own environment in .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build on these machines; a GPU user picks another build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.medssl-installed
OUT ?= outputs/demo

.PHONY: install test test-slow demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest -q

test-slow: install
	$(BIN)/python -m pytest -q -m slow

demo: install
	$(BIN)/medssl demo --out $(OUT)

bench: install
	$(BIN)/python benchmarks/bench_ecg_jepa.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
