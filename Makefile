# Two commands do everything, set-up included:  make demo  |  make test
SHELL := bash
.SHELLFLAGS := -eo pipefail -c
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# pip prints one harmless line per local index it skips; keep the log readable
# (the braces keep pip's exit status: only grep's "no lines" status is forgiven)
PIPFILTER := { grep -v "is ignored: it is neither a file nor a directory" || true; }

.PHONY: setup demo test test-fast lint report bench serve workflow clean gpu-check

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing lipbench and its pinned dependencies into $(VENV) (first time: ~2 min)"
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]' 2>&1 | $(PIPFILTER)
	@touch $(STAMP)

setup: $(STAMP)

demo: setup  ## text → speech → lip-synced MP4 on the built-in avatar (results/demo/)
	$(BIN)/lipbench generate --out results/demo/result.mp4

test: setup  ## the whole test suite (what CI runs)
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q

# the suite minus what starts fresh interpreters, renders whole pipelines, drives Slurm or a
# browser, or runs a real bench (markers in pyproject.toml; tests/conftest.py adds two)
FAST := not slow and not process and not bench and not slurm and not browser
test-fast: setup  ## the quick lane: ruff + the tests that run in a few minutes
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest -q -m "$(FAST)"

lint: setup
	$(BIN)/ruff check src tests && $(BIN)/ruff format --check src tests

report: setup  ## sweep notebook → CSV → report notebook → results/report/report.html
	$(BIN)/snakemake --cores 2 report

bench: setup  ## sequential vs parallel speedup table, measured in one run
	$(BIN)/lipbench bench --durations 5,15,30 --models gan,nogan --max-pairs 6

gpu-check: setup  ## on a CUDA machine: CUDA tests + speed suite + strategy bench (≤ 8 min) → docs/gpu-check/
	$(BIN)/python -m lipbench.backends.gpu_check --docs docs/gpu-check --results results/gpu-check

serve: setup  ## http://127.0.0.1:3000/parallel_test
	$(BIN)/lipbench serve

workflow: setup  ## the Snakemake workflow on the config's jobs
	$(BIN)/snakemake --cores 2

clean:
	rm -rf results/* .snakemake
