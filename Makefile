# trailguard — every target sets up (or refreshes) the virtual environment itself.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.stamp-deps
PYTEST_ARGS ?=
DEMO_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv demo test lint typecheck pytest bench fuzz clean
FUZZ_SECONDS ?= 1800
FUZZ_SEED ?= 1

help:
	@echo "make demo   - the real daemon against an embedded AWS emulator (Ctrl-C to stop)"
	@echo "make test   - the whole suite: ruff, mypy --strict, pytest"
	@echo "make bench  - throughput benchmark against the naive gzip+json loop"
	@echo "make fuzz   - the C scanner under ASan+UBSan, every decode path compared (FUZZ_SECONDS=1800)"
	@echo "make clean  - remove the virtual environment and caches"

$(STAMP): pyproject.toml setup.py daemon/trailguard/detect/_scan.c scripts/venv.sh
	@PYTHON=$(PYTHON) VENV=$(VENV) ./scripts/venv.sh
	@touch $@

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/trailguard demo $(DEMO_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check daemon tests bench scripts
	$(BIN)/ruff format --check daemon tests bench scripts

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint typecheck pytest

bench: $(STAMP)
	$(BIN)/python -m bench.run

fuzz: $(STAMP)
	$(BIN)/python -m tests.fuzz.campaign --seconds $(FUZZ_SECONDS) --seed $(FUZZ_SEED)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis bench/.cache
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
