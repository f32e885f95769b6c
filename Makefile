# pareto-proxy: `make serve` sets up and starts the proxy on its embedded defaults;
# `make test` sets up and runs the tests. Both work on a fresh machine with python3.
VENV ?= .venv
PY := $(VENV)/bin/python
export LITELLM_LOCAL_MODEL_COST_MAP := True

.PHONY: setup serve test bench bench-deps clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

serve: setup
	$(VENV)/bin/pareto-proxy serve $(ARGS)

test: setup
	$(PY) -m pytest -q $(ARGS)

bench-deps:
	@command -v nginx >/dev/null && command -v wrk >/dev/null || \
	  (apt-get update -q && apt-get install -y -q nginx wrk)

bench: setup bench-deps
	$(PY) bench/passthrough.py $(ARGS)

clean:
	rm -rf $(VENV) .pareto .pytest_cache
