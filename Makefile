# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format mypy package pytest bench all clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e . --group dev
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/cio-worker demo

lint: $(STAMP)
	$(VENV)/bin/ruff check cio_worker tests bench
	$(VENV)/bin/ruff format --check cio_worker tests bench

format: $(STAMP)
	$(VENV)/bin/ruff format cio_worker tests bench
	$(VENV)/bin/ruff check --fix cio_worker tests bench

mypy: $(STAMP)
	$(VENV)/bin/mypy

# The sdist and the wheel as they would be published, in a temporary directory (removed after),
# and `twine check --strict` on both (the package index's page renders, metadata complete).
# Quiet unless it fails. tests/test_package.py does the same in `make test`, checks what they
# hold and installs the wheel in a fresh virtualenv.
package: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	if ! $(PY) -m build --outdir "$$tmp/dist" . >"$$tmp/build.log" 2>&1; then \
		cat "$$tmp/build.log"; exit 1; fi && \
	$(VENV)/bin/twine check --strict "$$tmp"/dist/*

# Two phases. Every test but the chaos suite, on two workers (pytest-xdist), a test file at a
# time each, so a module's servers start once; then the chaos suite alone, in one process: its
# faults and timings run in real time and it was written for a machine it does not share.
# `PYTEST_WORKERS=0 make pytest` runs the first phase in one process too.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile --ignore=tests/chaos
	$(PY) -m pytest tests/chaos

# The build and `twine check --strict` run inside pytest (tests/test_package.py), built once.
test: lint mypy pytest

all: test

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
