# Every target sets itself up: a fresh clone needs nothing but python3 (>= 3.10).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo plots test test-fast lint clean bench

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Stamp files record what is installed; they are redone when pyproject.toml changes.
$(VENV)/.installed: $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@ $(VENV)/.installed $(VENV)/.installed-data

# The data extra (scikit-learn's load_digits) for the README's next examples.
$(VENV)/.installed-data: $(PY) pyproject.toml
	$(PY) -m pip install --quiet -e '.[data]'
	touch $@ $(VENV)/.installed

demo: $(VENV)/.installed-data
	$(PY) examples/seed_example.py

# The README's epsilon plots (plots/*.png) and their CSV data (runs/eps_comparison/).
plots: $(VENV)/.installed
	$(PY) examples/eps_comparison.py

# ruff checks the project's own code only, so a scratch script in the clone does not fail the tests.
LINT_PATHS := minnet tests scripts benchmarks examples

# One pytest worker per core, whole files per worker (a file's tests share compiled kernels).
XDIST := -n auto --dist loadfile

test: $(VENV)/.installed-dev
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m pytest -q $(XDIST)

# The same without the tests marked slow (the 16-bit kernel tables, every float32 bit pattern).
test-fast: $(VENV)/.installed-dev
	$(PY) -m ruff check $(LINT_PATHS)
	$(PY) -m pytest -q $(XDIST) -m "not slow"

# Speed against PyTorch and JAX (README "Performance"): minutes, in its own venv so that torch and
# jax never enter $(VENV); writes plots/bench_step.png, bench_optimizer.png and bench_family.png.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -e '.[bench]'
	touch $@

bench: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m benchmarks

# Only the optimizer-family table (every optimizer alone against PyTorch / optax, a few minutes);
# writes plots/bench_family.png.
.PHONY: bench-optimizers
bench-optimizers: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m benchmarks --only optimizers

# Only Adam alone in float32, bfloat16 and float16 (minnet's recipes and PyTorch's, a few
# minutes); prints whether the all-bfloat16 step is 1.6x faster than float32 at 10^7.
.PHONY: bench-lowp
bench-lowp: $(BENCH_VENV)/.installed
	$(BENCH_VENV)/bin/python -m benchmarks --only lowp

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check $(LINT_PATHS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
