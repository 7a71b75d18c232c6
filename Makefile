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

# Without chromium the browser test of the play page is skipped: say so before and after the run.
NO_CHROMIUM_MSG := "*** WARNING: chromium is not installed: tests/test_play_browser.py will be SKIPPED (apt-get install -y chromium, as .ci/run does) ***"
HAVE_CHROMIUM = command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1

test: setup lint
	@$(HAVE_CHROMIUM) || echo $(NO_CHROMIUM_MSG) >&2
	$(BIN)/pytest
	@$(HAVE_CHROMIUM) || echo $(NO_CHROMIUM_MSG) >&2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
