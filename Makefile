# Two commands for a fresh clone: `make demo` and `make test`.
# Each (re)creates .venv when pyproject.toml changes and installs the pinned set.
PY ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test check install clean

$(STAMP): pyproject.toml
	@$(PY) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(VENV)/bin/python || $(PY) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VENV)/bin/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/lab demo

# Starts (or reuses) PostgreSQL and Prometheus for the suite; tests that need a service
# skip with a printed reason when it cannot be had.
test: $(STAMP)
	bash infra/scripts/test-services.sh $(VENV)/bin/python -m pytest $(PYTEST_ARGS)

check: $(STAMP)
	$(VENV)/bin/python -m ruff check lab universe strategies serving flows tests benchmarks

clean:
	rm -rf $(VENV) .lab .pytest_cache
