# The two entry points of the README: `make demo` and `make test`.
# Both create the virtualenv and install on first use, so they work on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# s3rver (npm): the object store under the embedded broker's durable storage.
S3RVER := $(VENV)/s3rver/node_modules/s3rver/package.json

.PHONY: setup compile system-deps demo up test test-fast test-cluster bench lint clean

setup: $(STAMP) system-deps $(S3RVER)

# The install compiles the hot modules with Cython (hatch_build.py); `marquee version` then
# says whether the compiled or the pure-Python path runs.
$(STAMP): pyproject.toml hatch_build.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	$(BIN)/marquee version
	touch $(STAMP)

# After editing a compiled module (streams.compiled.MODULES): until this runs, its source runs.
compile: $(STAMP)
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/marquee version

system-deps:
	infra/install-system-deps.sh

$(S3RVER): infra/install-s3rver.sh | system-deps
	infra/install-s3rver.sh $(VENV)/s3rver

demo: setup
	$(BIN)/marquee demo

up: setup
	$(BIN)/marquee up

test: setup
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not integration"

# The multi-host tests alone (hosts as network namespaces: root and iproute2); `make test`
# runs them too. Each fault's cost is printed at the end.
test-cluster: setup
	$(BIN)/python -m pytest -q -m cluster

bench: setup
	$(BIN)/marquee bench all

lint: $(STAMP)
	$(BIN)/ruff check streams models serve infra feature_repo tests

clean:
	rm -rf $(VENV) var build *.egg-info streams/compiled.json
	find streams -name '*.so' -delete
