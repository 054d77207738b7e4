# make demo: replay a built-in trace through the cache, one line per policy.
# make test: the whole test suite (what CI runs).
# Both create .venv and install the project with its dev extra on first use; the C core is
# rebuilt whenever native/ or the packaging files change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edge-installed
NATIVE := native/build_ffi.py native/include/edge.h $(wildcard native/src/*.c)

.PHONY: demo test install sanitize lint bench clean

demo: $(STAMP)
	$(VENV)/bin/edge demo

test: $(STAMP)
	$(PY) -m pytest -q

install: $(STAMP)

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml setup.py $(NATIVE)
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# The C core's own test program under AddressSanitizer + UBSan (also run by the test suite).
sanitize:
	$(MAKE) -C native sanitize

lint: $(STAMP)
	$(VENV)/bin/ruff check edge tests scripts

bench: $(STAMP)
	$(PY) scripts/bench_cache.py

clean:
	rm -rf $(VENV) build *.egg-info edge/_native/_edge_core*.so edge/_native/_edge_core.c native/build
