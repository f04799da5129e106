# Two commands for a new user:
#   make demo   install everything, then run the main job on the embedded demo data
#   make test   install everything, then run the test suite
# torch is pinned to 2.13.0 (a CPU-capable build); an unpinned torch would pull GBs of CUDA packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_ROOT ?= ../data
DEMO_FLAGS ?= --dataset demo --data-root $(DATA_ROOT) --width 0.125 --crop 128 --batch_size 4 --epochs 6 --windows-per-video 8

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: install
	$(PY) utils.py make-demo --out $(DATA_ROOT)

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
