# Two commands for a newcomer: `make run` (the main job on the embedded default) and `make test`.
PY      ?= python3.11
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: run test test-all test-slurm bench install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PY) -m venv $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

## The main job: synthetic journeys -> train -> sample -> evaluate -> report (CPU, minutes, no downloads).
run: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m bjexp.train $(ARGS)

## The test suite (CPU, offline). Slow and SLURM tests are opt-in: `make test-all`, `make test-slurm`.
test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slow and not slurm" $(ARGS)

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m "not slurm" $(ARGS)

test-slurm: $(STAMP)
	bash slurm/ci.sh

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf outputs multirun .pytest_cache
