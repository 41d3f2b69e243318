# The two set-up commands of the README. Each creates or reuses .venv (tools/setup_env.sh).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test complexity

setup:
	@VENV=$(VENV) bash tools/setup_env.sh

# The main job. Until the detection demo lands: the complexity table against the paper.
demo: setup
	$(PY) tools/analyze_complexity.py

test: setup
	$(PY) -m pytest -q

complexity: setup
	$(PY) tools/analyze_complexity.py
