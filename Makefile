# appvitals — two commands matter: `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help venv demo test lint typecheck pytest docs bench bench-guard clean

help:
	@echo "make demo   run an instrumented example app and summarise its telemetry"
	@echo "make test   lint, type-check and run the test suite with coverage"
	@echo "make bench  the side-by-side load benchmark, the paired CPU benchmark and the micro-benchmarks (docs/benchmarks.md)"
	@echo "make bench-guard  fail when appvitals adds more than 2 % to a /work request"

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/demo.py

lint: $(STAMP)
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy
	$(BIN)/mypy --strict tests/typing/api.py

# `coverage run` (not pytest-cov) so that modules pytest imports early, as the appvitals
# pytest plugin does, are measured too.
pytest: $(STAMP)
	rm -f .coverage .coverage.*
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage combine -q
	$(BIN)/coverage report

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --quiet --site-dir site

test: lint typecheck pytest docs

# Instructions per /work request under valgrind's callgrind: stable on a shared machine.
bench-guard: $(STAMP)
	$(BIN)/python benchmarks/guard.py

# Needs Debian's wrk; installs the pinned alternatives (Sentry, ddtrace, OTel contrib).
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -r benchmarks/requirements.txt
	$(BIN)/python benchmarks/load.py
	$(BIN)/python benchmarks/paired.py
	$(BIN)/python benchmarks/micro.py

clean:
	rm -rf $(VENV) appvitals-data .coverage* htmlcov dist build
