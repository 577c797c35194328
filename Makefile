# revdistill: two commands set everything up on a fresh machine.
#   make test       create/refresh .venv and run the whole test suite
#   make dashboard  create/refresh .venv, start the compute service and serve the Voila dashboard on
#                   http://127.0.0.1:8866 (every visitor's kernel sends its work to the one service)
#   make lint       create/refresh .venv and run the linter (pyproject.toml's [tool.ruff])
#   make soak       the load test: twelve browser visitors over a minute (not part of make test)

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8866
# Preheated kernels: two per core, at most 8 (a visitor's kernel holds widgets only: ~1.3 CPU-s and ~110 MB PSS ready,
# ~2.7 CPU-s after its visitor's Compute; revdistill.dashboard.kernel).
POOL ?= $(shell n=$$(nproc 2>/dev/null || echo 2); n=$$((2 * n)); if [ $$n -gt 8 ]; then n=8; fi; echo $$n)
STAMP := $(VENV)/.revdistill-installed
# revdistill's Voila template (no CDN requests; revdistill.dashboard.serving.TEMPLATE) lives in the package.
VOILA_TEMPLATES := $(CURDIR)/revdistill/dashboard/jupyter
# torch 2.13.0 is the CPU wheel on machines without CUDA; keeps pip from pulling a multi-GB CUDA build.
TORCH_PIN ?= torch==2.13.0

.PHONY: test lint soak dashboard venv bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	if ! command -v nvidia-smi >/dev/null 2>&1; then $(PY) -m pip install -q "$(TORCH_PIN)"; fi
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

# The linter (rules and per-file exceptions in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .

# Twelve browser visitors over a minute against the served dashboard (~4-5 min; tests/test_soak.py).
soak: $(STAMP)
	$(PY) -m pytest -m soak tests/test_soak.py $(PYTEST_ARGS)

dashboard: $(STAMP)
	@echo "revdistill dashboard: http://127.0.0.1:$(PORT)/"
	cd notebooks && export REVDISTILL_SERVICE="$${REVDISTILL_SERVICE:-1}" REVDISTILL_PROTEINGYM_DIR="$${REVDISTILL_PROTEINGYM_DIR:-$$(cd ../../shared/data/proteingym 2>/dev/null && pwd)}" JUPYTER_PATH="$(VOILA_TEMPLATES)$${JUPYTER_PATH:+:$$JUPYTER_PATH}" && ../$(PY) -m revdistill.service start >/dev/null && ../$(VENV)/bin/voila dashboard.ipynb --template=revdistill --port=$(PORT) --no-browser --Voila.ip=127.0.0.1 --VoilaConfiguration.default_pool_size=$(POOL)

bench: $(STAMP)
	$(PY) bench/fit.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
