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
DATA_ROOT ?= ../data
# The demo: a small ASVFI (width 0.125) on the synthetic audio-visual set, ~5 min of training on 2 CPU cores;
# a scripted run, so a second `make demo` starts it again (--overwrite) instead of stopping.
DEMO_DATA := --dataset demo --data-root $(DATA_ROOT)
DEMO_RUN := --optimizer adamw --lr 2e-3
DEMO_TRAIN ?= $(DEMO_RUN) --overwrite --width 0.125 --crop 96 --batch_size 8 --windows-per-video 24 --val-windows 64 \
	--gate-lr-mult 10 --epochs 6 --workers 1

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
	$(PY) main.py $(DEMO_DATA) $(DEMO_TRAIN)
	$(PY) inference.py $(DEMO_DATA) $(DEMO_RUN) -s 2 --overwrite
	$(PY) inference.py $(DEMO_DATA) --model blend -s 2 --overwrite
	$(PY) evaluate.py $(DEMO_DATA) --model blend -s 2 --restart
	$(PY) evaluate.py $(DEMO_DATA) $(DEMO_RUN) -s 2 --restart

test: install
	$(PY) -m pytest -q tests

clean:
	rm -rf $(VENV) .pytest_cache
