# Every target that runs code first makes sure .venv exists and matches pyproject.toml and
# constraints.txt.
# The first of python3.11 / python3 that is Python 3.11 or newer (override: make PYTHON=...).
PYTHON ?= $(shell for p in python3.11 python3; do \
	$$p -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null && { echo $$p; break; }; \
	done)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

FUZZ_STAMP := $(VENV)/.fuzz-installed
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := video dataset_csv dataset_json artifact upload
LINTED := src tests bench docs fuzz

.PHONY: venv demo test lint format bench fuzz constraints clean

venv: $(STAMP)

# Every version comes from constraints.txt, so a fresh machine installs what CI tested.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || test -n "$(PYTHON)" || \
		{ echo "error: deepfake-detect needs Python 3.11 or newer (python3.11 or python3)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# Re-resolve every dependency as a fresh machine would (pip's resolver in an empty venv,
# nothing installed) and pin each version; commit the new constraints.txt with what needs it.
constraints:
	$(PYTHON) -m venv --clear .constraints-venv
	.constraints-venv/bin/python -m pip install --quiet --upgrade pip
	.constraints-venv/bin/python -m pip install --quiet --dry-run --report .constraints-venv/report.json -e '.[dev,fuzz]'
	echo "# Every version CI tested, pinned by 'make constraints'; pip install -c constraints.txt" > constraints.txt
	.constraints-venv/bin/python -c 'import json; report = json.load(open(".constraints-venv/report.json")); print("\n".join(sorted(("%s==%s" % (p["metadata"]["name"], p["metadata"]["version"]) for p in report["install"] if not p.get("is_direct")), key=str.lower)))' >> constraints.txt
	rm -rf .constraints-venv

demo: $(STAMP)
	$(BIN)/deepfake-detect demo

test: $(STAMP) lint
	# Two processes: most of the suite waits on subprocesses and decoding, one core each.
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

format: $(STAMP)
	$(BIN)/ruff check --fix $(LINTED)
	$(BIN)/ruff format $(LINTED)

bench: $(STAMP)
	$(BIN)/python bench/preprocess.py

# atheris is in the `fuzz` extra, not `dev`: `make test` does not need it.
$(FUZZ_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev,fuzz]'
	touch $(FUZZ_STAMP)

# Each parser of untrusted bytes for FUZZ_SECONDS; a finding stops with .fuzz/TARGET/crash-*.
fuzz: $(FUZZ_STAMP)
	for target in $(FUZZ_TARGETS); do \
		$(BIN)/python fuzz/run.py $$target --seconds $(FUZZ_SECONDS) || exit 1; \
	done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build src/*.egg-info .fuzz
