# Hooklane's front door. Every target installs what it needs into .venv first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pytest-xdist workers for `make test` (each with its own broker and database); 0 = serial
TEST_WORKERS ?= 3

.PHONY: install run test lint format mypy bench bench-quick chaos fuzz screenshots clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(BIN)/hooklane up

test: install lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: install
	$(BIN)/hooklane bench $(ARGS)

bench-quick: install
	$(BIN)/hooklane bench --quick $(ARGS)

chaos: install
	$(BIN)/python -m pytest -q -m chaos -p no:cacheprovider -o addopts="" -s tests/chaos

# The property-based fuzz tests with thousands of examples each (`make test` runs 100).
FUZZ_TESTS := tests/test_fuzz_router.py tests/test_fuzz_bodies.py tests/test_filter_cost.py
fuzz: install
	$(BIN)/python -m pytest -q -p no:cacheprovider -o timeout=3600 --hypothesis-profile=fuzz --hypothesis-show-statistics $(FUZZ_TESTS)

# Refresh docs/portal/*.png from the portal's browser tests (plain `make test` leaves them).
screenshots: install
	PORTAL_SCREENSHOTS=docs/portal $(BIN)/python -m pytest -q tests/test_portal_browser.py

clean:
	rm -rf $(VENV) .bench .pytest_cache .mypy_cache .ruff_cache .import_linter_cache *.egg-info
