# Two commands are all a new user needs (each sets up what is missing first):
#   make demo   run the main job
#   make test   run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: setup demo test bench
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m roteq_param.cli demo

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m roteq_param.cli bench
