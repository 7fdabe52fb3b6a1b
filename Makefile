# Two commands do all set-up on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install run test lint format mypy pytest bench all clean

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

pytest: $(STAMP)
	$(PY) -m pytest

test: lint mypy pytest

all: test

clean:
	rm -rf $(VENV) .data .pytest_cache .mypy_cache .ruff_cache
