# Two commands for a new user:
#   make demo   install everything, then run the main job on the embedded demo data
#   make test   install everything, then run the test suite
# TORCH / TORCH_INDEX choose the torch build (see README, "Install"); the default pin keeps pip
# from resolving an unpinned torch, which on Linux means several GB of CUDA packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= torch==2.13.0
TORCH_INDEX ?=
DATA_ROOT ?= ../data/demo-160x120
# The demo (`tools.py demo`): a small ASVFI trained with and without audio on the synthetic
# audio-visual set at 160x120, the test split regenerated with both and three baselines, one table;
# 2 to 5 minutes on 2 CPU cores. A second `make demo` trains again instead of stopping.

# One stamp per torch choice, so `make test TORCH=...` reinstalls instead of reusing another build.
TORCH_STAMP := $(VENV)/.installed-$(shell printf '%s %s' '$(TORCH)' '$(TORCH_INDEX)' | cksum | cut -d' ' -f1)

.PHONY: install demo test clean

install: $(TORCH_STAMP)

$(TORCH_STAMP): requirements.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install --quiet -r requirements.txt
	rm -f $(VENV)/.installed*
	touch $@

demo: install
	$(PY) tools.py demo --data-root $(DATA_ROOT)

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
