# The two set-up commands of the README. Each creates or reuses .venv (tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test complexity

setup:
	@VENV=$(VENV) bash tools/setup_env.sh

# The main job: build the digits set, train and evaluate a small ResNeXt Faster R-CNN on the CPU.
demo: setup
	$(PY) tools/demo.py

# One pytest worker per core (pytest-xdist; tests/conftest.py gives each worker's torch its
# share of the threads). `$(PY) -m pytest tests/...` runs a part of it on one process.
test: setup
	$(PY) -m pytest -q -n auto --maxprocesses 8

complexity: setup
	$(PY) tools/analyze_complexity.py
