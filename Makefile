# Two entry points for a fresh clone (see README):
#   make run    set up .venv and run the main job
#   make test   set up .venv and run lint + the test suite (this is what CI runs)
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup run test lint clean

setup: $(VENV)/.installed

# constraints.txt pins the CPU build of torch so no CUDA packages are pulled here.
$(VENV)/.installed: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -c constraints.txt -e ".[all]"
	touch $@

run: setup
	bash scripts/main_job.sh

lint: setup
	$(BIN)/ruff check .

test: setup lint
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
