# medssl: every target sets up its own environment in .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build on these machines; a GPU user picks another build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.medssl-installed
OUT ?= outputs/demo

.PHONY: install test test-slow test-floors demo bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# The suite at the default precision (fp32 on a CPU), then the precision-sensitive tests again with
# bf16 forced, so a CPU without native bf16 still checks the bf16 path.
test: install
	$(BIN)/python -m pytest -q
	MEDSSL_PRECISION=bf16 $(BIN)/python -m pytest -q -m "precision and not slow"

test-slow: install
	$(BIN)/python -m pytest -q -m slow

# The lowest versions pyproject.toml allows (torch stays at TORCH_SPEC: the CPU build on disk),
# in a separate environment, running the fast tests.
FLOORS_VENV := .venv-floors
test-floors:
	$(PYTHON) -m venv $(FLOORS_VENV)
	$(FLOORS_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(FLOORS_VENV)/bin/python -m pip install --quiet $(TORCH_SPEC)
	$(PYTHON) .ci/floors.py pyproject.toml --extras dev > $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install --quiet -r $(FLOORS_VENV)/floors.txt
	$(FLOORS_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider

demo: install
	$(BIN)/medssl demo --out $(OUT)

bench: install
	$(BIN)/python benchmarks/bench_ecg_jepa.py

clean:
	rm -rf $(VENV) $(FLOORS_VENV) outputs .pytest_cache
