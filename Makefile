# ARML Explorer. `make run` starts the app, `make test` runs the tests.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
PORT    ?= 8501
# sleeping (not spinning) OpenMP waits: see arml_core/__init__.py
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: run test bench reproduce install dev clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch first: a bare `torch` requirement with no torch installed pulls a multi-GB CUDA build
$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.installed-dev: requirements-dev.txt $(VENV)/.installed
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

run: $(VENV)/.installed
	$(BIN)/streamlit run app.py --server.port $(PORT) --server.headless true --browser.gatherUsageStats false

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest

bench: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/run_all.py

# the paper's evaluation: cached in runs/, resumable; writes results/ (DATASETS=splice,pendigits ... to narrow)
DATASETS ?= all
DEVICE   ?= auto
reproduce: $(VENV)/.installed
	$(BIN)/python -m arml_core reproduce --datasets $(DATASETS) --device $(DEVICE)

clean:
	rm -rf $(VENV) .pytest_cache
