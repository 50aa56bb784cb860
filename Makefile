# Every target that runs code first makes sure .venv exists and matches pyproject.toml.
# The first of python3.11 / python3 that is Python 3.11 or newer (override: make PYTHON=...).
PYTHON ?= $(shell for p in python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || test -n "$(PYTHON)" || \
		{ echo "error: deepfake-detect needs Python 3.11 or newer (python3.11 or python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/deepfake-detect demo

test: $(STAMP) lint
	# Two processes: most of the suite waits on subprocesses and decoding, one core each.
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check src tests bench docs
	$(BIN)/ruff format --check src tests bench docs

format: $(STAMP)
	$(BIN)/ruff check --fix src tests bench docs
	$(BIN)/ruff format src tests bench docs

bench: $(STAMP)
	$(BIN)/python bench/preprocess.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info
