# Two commands are all a new user needs (each sets up what is missing first):
#   make demo   run the main job
#   make test   run the whole test suite
#   make docs   build the documentation site into docs/_build/html (runs the example gallery)
VENV ?= .venv
PY := $(VENV)/bin/python
# escnn builds its kernel bases in string-hash order: fix the seed so runs are reproducible
export PYTHONHASHSEED := 0

.PHONY: setup demo test docs bench reproduce
setup:
	@bash scripts/setup.sh

demo: setup
	$(PY) -m solver_coupling.cli demo

# the import contracts (pyproject.toml [tool.importlinter]) first: they are the architecture
test: setup
	$(VENV)/bin/lint-imports --no-cache
	$(PY) -m pytest -q tests

# warnings are errors (-W) so a broken reference or a failing gallery example fails the build;
# examples run on one thread, as a user's single-core run would
docs: setup
	OMP_NUM_THREADS=1 $(VENV)/bin/sphinx-build -W --keep-going -b html -j 1 docs docs/_build/html

bench: setup
	$(PY) -m solver_coupling.cli bench

# every number in the README's results (about 2 hours on 2 cores)
reproduce: setup
	bash scripts/reproduce.sh
