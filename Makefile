# medssl: every target sets up its own environment in .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU build on these machines; a GPU user picks another build, e.g.
#   make install TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.medssl-installed
OUT ?= outputs/demo

.PHONY: install test test-slow test-floors demo bench bench-real clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	# litdata (extra `stream`, for its tests) without torchvision, which it imports only for images and
	# whose PyPI wheel does not match a +cpu torch
	$(BIN)/python -m pip install --quiet --no-deps "litdata>=0.2.50"
	$(BIN)/python -m pip install --quiet boto3 obstore tifffile
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
	$(FLOORS_VENV)/bin/python -m pip freeze | grep '^torch==' > $(FLOORS_VENV)/keep-torch.txt
	$(PYTHON) .ci/floors.py pyproject.toml --extras dev > $(FLOORS_VENV)/floors.txt
	# the constraint makes a floor that cannot run with this torch an error, not a silent torch swap
	$(FLOORS_VENV)/bin/python -m pip install --quiet -r $(FLOORS_VENV)/floors.txt -c $(FLOORS_VENV)/keep-torch.txt
	$(FLOORS_VENV)/bin/python -m pip install --quiet --no-deps -e .
	$(FLOORS_VENV)/bin/python -m pytest -q -p no:cacheprovider

demo: install
	$(BIN)/medssl demo --out $(OUT)

bench: install
	$(BIN)/python benchmarks/bench_ecg_jepa.py

# Full benchmarks on the real sets in ../shared/data/real/ (issue 14; wall times and results in
# benchmarks/RESULTS.md, "Real data"). Each script takes --data/--eval-data/--out; their smoke
# versions run in `make test` (tests/benchmarks/test_real_pipelines.py).
REAL_OUT ?= outputs
bench-real: install
	$(BIN)/python benchmarks/real_ixi_brain_age.py --out $(REAL_OUT)/real_ixi_brain_age
	$(BIN)/python benchmarks/real_ecg_cinc.py --out $(REAL_OUT)/real_ecg_cinc
	$(BIN)/python benchmarks/real_drive.py --out $(REAL_OUT)/real_drive

clean:
	rm -rf $(VENV) $(FLOORS_VENV) outputs .pytest_cache
