# syncd — the two commands a new user needs are `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test lint typecheck unit alerts dist bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/syncd demo

lint: install
	$(BIN)/ruff check
	$(BIN)/ruff format --check

typecheck: install
	$(BIN)/mypy --strict syncd

# The tests include a smoke run of the benchmarks (so they cannot rot), which needs the bench extra.
unit: $(VENV)/.bench-installed
	$(BIN)/pytest -q

test: install lint typecheck unit

$(VENV)/.bench-installed: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

# The alert rules' unit tests alone (make test runs them too, in tests/e2e/test_alerting.py); needs promtool.
alerts:
	promtool check rules contrib/prometheus/syncd-rules.yml
	cd contrib/prometheus && promtool test rules syncd-rules_test.yml

# The wheel and the sdist in dist/ (tests/e2e/test_release.py checks what they carry).
dist: install
	$(BIN)/python -m build --outdir dist .

bench: $(VENV)/.bench-installed
	$(BIN)/python -m bench --full

bench-smoke: $(VENV)/.bench-installed
	$(BIN)/python -m bench --smoke

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .pytest_cache .ruff_cache
