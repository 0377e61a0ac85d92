# trailguard — every target sets up (or refreshes) the virtual environment itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-deps
# locked: requirements/*.txt, hash-checked (every target but test-latest); latest: newest releases
DEPS   ?= locked
LOCKS  := requirements/build.txt requirements/dev.txt
PYTEST_ARGS ?=
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint typecheck pytest bench fuzz lock test-latest test-deploy clean
FUZZ_SECONDS ?= 1800
BENCH_BASELINE ?=
FUZZ_SEED ?= 1

help:
	@echo "make demo        - the real daemon against an embedded AWS emulator (Ctrl-C to stop)"
	@echo "make test        - the whole suite: ruff, mypy --strict, pytest (locked dependencies)"
	@echo "make test-deploy - the image built and run, the unit booted under systemd (root; 3-5 min)"
	@echo "make test-latest - the suite on the newest releases of every dependency (.venv-latest)"
	@echo "make lock        - refresh requirements/*.txt from pyproject.toml (newest releases)"
	@echo "make bench       - throughput benchmark against the naive gzip+json loop; policy changes' cost"
	@echo "make fuzz        - the C scanner under ASan+UBSan, every decode path compared (FUZZ_SECONDS=1800)"
	@echo "make clean       - remove the virtual environments and caches"

$(STAMP): pyproject.toml setup.py daemon/trailguard/detect/_scan.c scripts/venv.sh $(LOCKS)
	@PYTHON=$(PYTHON) VENV=$(VENV) TRAILGUARD_DEPS=$(DEPS) ./scripts/venv.sh
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/trailguard demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench scripts
	$(BIN)/ruff format --check daemon tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

# Four workers on any machine: most integration tests wait on daemons, moto and signals, not on a
# CPU, so four finish in about a third of the time one takes even on two cores.
PYTEST_WORKERS ?= 4

pytest: $(STAMP)
	$(BIN)/pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

test: lint typecheck pytest

# tests/deploy: a real docker build and run, a real systemd under systemd-nspawn (root; see
# tests/deploy/__init__.py).  Not part of `make test`; .ci/run runs both.
test-deploy: $(STAMP)
	$(BIN)/pytest tests/deploy $(PYTEST_ARGS)

# The suite against the newest release of every dependency, in its own environment, resolved
# anew on every run: upstream drift shows here before `make lock` takes it in.  Not run by CI.
test-latest:
	rm -f .venv-latest/.stamp-deps
	$(MAKE) VENV=.venv-latest DEPS=latest test

lock: $(STAMP)
	UV=$(BIN)/uv ./scripts/lock.sh

bench: $(STAMP)
	$(BIN)/python -m bench.run
	$(BIN)/python -m bench.changes $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))

fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.campaign --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED)

clean:
	rm -rf $(VENV) .venv-latest .mypy_cache .ruff_cache .pytest_cache .hypothesis bench/.cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
