# recaudit — `make demo` (install, fetch ML-100k, train/load the reference model, run the quick suite)
# and `make test` (the test suite; .ci/run calls exactly this).
# `make data` fetches MovieLens-100k only (what the reference, python, openai and popularity adapters need);
# `make data-llm` adds SmolLM2-135M-Instruct (about 93 MB; the hf adapter's LLM suites and the slow tests).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: install data data-llm demo test test-fast dashboard docs bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# The CPU build of torch 2.13.0 first, so nothing pulls a CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

data: install
	$(BIN)/recaudit fetch ml-100k

data-llm: install
	$(BIN)/recaudit fetch smollm2-135m

demo: data
	$(BIN)/recaudit run examples/quick.yaml --out reports/quick
	@echo "Open the dashboard on this report:  $(BIN)/recaudit dashboard reports"

test: data data-llm
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

dashboard: install
	$(BIN)/recaudit dashboard reports

# docs/*.md reference pages from the code (tests/audit/test_docs_reference.py fails when they are stale)
docs: install
	$(BIN)/python -m audit.docs_reference

bench: data data-llm
	$(BIN)/python benchmarks/bench_candidate_scoring.py
	$(BIN)/python benchmarks/bench_harness_overhead.py
	$(BIN)/python benchmarks/bench_constrained_decoding.py
	$(BIN)/python benchmarks/bench_dp_step.py
	$(BIN)/python benchmarks/bench_federated.py

clean:
	rm -rf reports/*/ .pytest_cache test-artifacts
