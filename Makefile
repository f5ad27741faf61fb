# seqpipe — two commands do everything on a fresh machine: `make demo` and `make test`.
#
# The virtual environment lives outside the checkout (default ~/.cache/seqpipe/venv) so that
# every clone — and CI — reuses it instead of reinstalling torch (several GB) each time.
# Dependencies are reinstalled only when pyproject.toml or constraints.txt change.

PYTHON ?= python3
VENV ?= $(HOME)/.cache/seqpipe/venv
BIN := $(VENV)/bin
DEPS_HASH := $(shell cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)
DEPS_STAMP := $(VENV)/.seqpipe-deps-$(DEPS_HASH)
SEQPIPE_MIRROR ?= $(abspath ../shared/data)
export SEQPIPE_MIRROR
THREADS ?= 2
BENCH_ARGS ?=

.PHONY: install demo test lint format bench clean

install: $(DEPS_STAMP)
	@# (Re)point the editable install at this checkout; cheap, no dependency resolution.
	@$(BIN)/python -P -c "import seqpipe, pathlib, sys; sys.exit(pathlib.Path(seqpipe.__file__).resolve().parent != pathlib.Path('$(CURDIR)/seqpipe').resolve())" 2>/dev/null \
	  || $(BIN)/pip install -q --no-deps --no-build-isolation -e .

$(DEPS_STAMP):  # the hash in its name tracks pyproject.toml + constraints.txt (not mtimes: every clone is newer)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	@# torch==2.9.1 / torchaudio==2.9.1 are pinned in constraints.txt (see ../shared/GUIDE.md §5)
	$(BIN)/pip install -c constraints.txt -e '.[dev]'
	@rm -f $(VENV)/.seqpipe-deps-*
	@touch $@

demo: install
	$(BIN)/seqpipe run recipes/mt_small.yaml

test: install
	$(BIN)/python -m pytest -q -x -rs --durations=15 tests

lint: install
	$(BIN)/ruff check seqpipe tests
	$(BIN)/ruff format --check seqpipe tests

format: install
	$(BIN)/ruff format seqpipe tests
	$(BIN)/ruff check --fix seqpipe tests

bench: install
	$(BIN)/python bench/run_bench.py --threads $(THREADS) $(BENCH_ARGS)  # e.g. BENCH_ARGS='--joey --parts mt'

clean:
	rm -rf cache exp .pytest_cache
