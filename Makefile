# Two commands for a new user:
#   make demo   install everything, then run the main job on the embedded demo data
#   make test   install everything, then run the test suite
# torch is pinned to 2.13.0 (a CPU-capable build); an unpinned torch would pull GBs of CUDA packages.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_ROOT ?= ../data
# The demo: a small ASVFI (width 0.125) on the synthetic audio-visual set, ~5 min of training on 2 CPU cores.
DEMO_DATA := --dataset demo --data-root $(DATA_ROOT)
DEMO_RUN := --optimizer adamw --lr 2e-3
DEMO_TRAIN ?= $(DEMO_RUN) --width 0.125 --crop 96 --batch_size 8 --windows-per-video 24 --val-windows 64 \
	--gate-lr-mult 10 --epochs 6 --workers 1

.PHONY: install demo test clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

demo: install
	$(PY) main.py $(DEMO_DATA) $(DEMO_TRAIN)
	$(PY) inference.py $(DEMO_DATA) $(DEMO_RUN) -s 2 --overwrite
	$(PY) inference.py $(DEMO_DATA) --model blend -s 2 --overwrite
	$(PY) evaluate.py $(DEMO_DATA) --model blend -s 2 --restart
	$(PY) evaluate.py $(DEMO_DATA) $(DEMO_RUN) -s 2 --restart

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
