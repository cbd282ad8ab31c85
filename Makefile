# refimpl: the single entry point. `make book` and `make test` set everything up themselves.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# torch first, pinned: a CPU wheel lies on this machine's disk; with torch absent, any `torch>=X` would
# pull a multi-GB CUDA build from the index.
TORCH := torch==2.13.0
# --no-compile: pip would byte-compile every installed module (torch alone: 42 s CPU against 14 s without); Python
# compiles the modules a run imports, once, on first import.
PIP := $(PY) -m pip install --quiet --disable-pip-version-check --no-compile
JOBS ?= 2
# One thread per process: the tests run one process per core, and torch's intra-op threads on tiny
# tensors cost far more than they save (a softmax went from 17 us to 4 ms with 2 threads on 2 busy cores).
export OMP_NUM_THREADS := 1
# Python may cache the bytecode it compiles (an environment may forbid it: then every test process and notebook kernel
# compiles refimpl, toy_models and the tests again, 2.5-3.5 s CPU each, and with pip's --no-compile torch too, 4 s).
export PYTHONDONTWRITEBYTECODE :=
export MKL_NUM_THREADS := 1
BOOK_ARGS := --all --warningiserror --keep-going
QUICK_BOOK := book/_build/quick
FULL_BOOK := book/_build/full

.PHONY: help setup lint format test test-fast test-notebooks book book-check book-check-staged student lab bench oracle mutants fuzz train clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' Makefile | sed 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -c "import torch" 2>/dev/null || $(PIP) "$(TORCH)"
	$(PIP) -e '.[dev,book,compare]'
	@# k-diffusion for the oracle, without its dependencies (they pull torchvision, which does not import
	@# beside the CPU torch wheel): refimpl.oracle loads only its sampling module (see adapters.py).
	$(PIP) --no-deps k-diffusion==0.1.1.post1 2>&1 \
	  | grep -v "dependency resolver\|requires" || true
	$(PIP) --no-deps torchcfm==1.0.7 flow_matching==1.0.10  # ch. 10 cross-checks; their deps pull a CUDA torch
	@touch $(STAMP)

setup: $(STAMP)  ## create .venv and install what is missing (torch first)

lint: setup  ## ruff: lint and format check (package, tests, scripts, notebook code)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(PY) scripts/lint_notebooks.py  # notebook code cells, through jupytext (rules: see the script's docstring)

format: setup  ## apply ruff's formatting and safe fixes
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint  ## the whole suite: lint, every test (slow and notebooks included), the book and its maths check
	rm -rf $(QUICK_BOOK)
	@# the notebook tests save their executed notebooks; the book check renders those (each notebook runs once)
	REFIMPL_EXECUTED_NOTEBOOKS=$(CURDIR)/$(QUICK_BOOK)/src/notebooks HYPOTHESIS_PROFILE=ci \
	  $(PY) -m pytest -n $(JOBS) --dist worksteal --durations=15
	$(MAKE) book-check-staged

test-fast: setup  ## the quick loop: no notebooks, no slow tests (under 2 minutes)
	$(PY) -m pytest -n $(JOBS) -m "not slow"

test-notebooks: setup  ## execute every notebook from a clean kernel (small sizes)
	$(PY) -m pytest -n $(JOBS) -m notebook

book: setup  ## execute every notebook (full size) and build the book into book/_build/html
	rm -rf book/_build/html book/_build/jupyter_execute book/_build/.doctrees $(FULL_BOOK)
	@# each chapter runs once, JOBS at a time in their own kernels (a failing cell stops the build, after the
	@# others have run); Jupyter Book then renders the executed notebooks without executing them again
	env -u REFIMPL_QUICK $(PY) scripts/run_chapters.py --jobs $(JOBS) --save $(FULL_BOOK)/src/notebooks --no-fail
	$(PY) scripts/stage_book.py --stage $(FULL_BOOK)/src
	$(VENV)/bin/jupyter-book build $(FULL_BOOK)/src $(BOOK_ARGS) --path-output book
	@echo "The book is at book/_build/html/index.html"

book-check: setup  ## build the book (small sizes) and check in headless Chromium that its maths renders
	rm -rf $(QUICK_BOOK)
	$(MAKE) book-check-staged

book-check-staged: setup
	@# chapters the notebook tests executed are rendered as they are; any other chapter is executed here
	$(PY) scripts/stage_book.py --stage $(QUICK_BOOK)/src
	REFIMPL_QUICK=1 $(VENV)/bin/jupyter-book build $(QUICK_BOOK)/src $(BOOK_ARGS) --path-output $(QUICK_BOOK)
	@# every chapter page: the first one's screenshot is kept as book/_build/quick/_build/math-check.png
	$(PY) scripts/check_book.py --html-dir $(QUICK_BOOK)/_build/html notebooks/02_analytic_lab \
	  $$(cd $(QUICK_BOOK)/_build/html && grep -L 'http-equiv="refresh"' notebooks/*.html | grep -v 02_analytic_lab)

STUDENT := book/_build/student
student: setup  ## the student edition: notebooks with stubs and checks, and the book without its solutions
	rm -rf $(STUDENT)
	$(PY) scripts/make_student.py --out $(STUDENT)
	env -u REFIMPL_QUICK $(VENV)/bin/jupyter-book build $(STUDENT)/src $(BOOK_ARGS) --path-output $(STUDENT)
	@echo "Student notebooks in $(STUDENT)/notebooks; the book without solutions at $(STUDENT)/_build/html/index.html"

lab: setup  ## JupyterLab on the notebooks (MyST .md files open as notebooks)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $$( [ "$$(id -u)" = 0 ] && echo --allow-root )

bench: setup  ## speed and accuracy tables, and each chapter's full-size time (printed; nothing is asserted)
	$(PY) -m refimpl.bench
	$(PY) scripts/run_chapters.py --no-fail  # one chapter at a time: each time is its own
	$(PY) scripts/bench_search.py

train: setup  ## retrain the MLP, UNet and digits classifier into toy_models/checkpoints/ (CPU: minutes)
	$(PY) -m toy_models.train all

oracle: setup  ## explore every third-party sampler against refimpl; report in bench-results/oracle-report.md
	$(PY) -m refimpl.oracle.matrix --out bench-results

mutants: setup  ## which seeded defects the oracle and the property suite catch
	$(PY) -m refimpl.oracle.mutants

fuzz: setup  ## the public-API fuzzer, long: known hangs re-run, 500 hypothesis examples per package, counts table
	FUZZ_ALL=1 FUZZ_EXAMPLES=500 $(PY) -m pytest tests/test_fuzz.py -p no:randomly -p no:cacheprovider -s -q

clean:  ## remove build outputs and caches (keeps .venv)
	rm -rf book/_build .pytest_cache .ruff_cache .hypothesis bench-results
	find . -path ./.venv -prune -o -name __pycache__ -type d -exec rm -rf {} +
