# Every target that runs code first makes sure .venv exists and matches pyproject.toml.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint format bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
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
