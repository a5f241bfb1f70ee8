# Two commands are all a new user needs (each sets up what is missing first):
#   make demo   run the main job
#   make test   run the whole test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# escnn builds its kernel bases in string-hash order: fix the seed so runs are reproducible
export PYTHONHASHSEED := 0

.PHONY: setup demo test bench reproduce
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m solver_coupling.cli demo

# the import contracts (pyproject.toml [tool.importlinter]) first: they are the architecture
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q tests

bench: setup
	$(PY) -m solver_coupling.cli bench

# every number in the README's results (about 2 hours on 2 cores)
reproduce: setup
	bash scripts/reproduce.sh
