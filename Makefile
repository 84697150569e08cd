# TrailStop: `make run` and `make test` do all set-up themselves (a .venv next to this file).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export QT_QPA_PLATFORM ?= offscreen

.PHONY: run demo test lint unit bench chaos chaos-safety dist screenshots clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

run: $(STAMP)
	QT_QPA_PLATFORM= $(BIN)/trailstop-gui $(ARGS)

demo: $(STAMP)
	QT_QPA_PLATFORM= $(BIN)/trailstop-gui --demo $(ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# make test: lint, then the whole suite on pytest-xdist workers. Most of the suite waits (sockets, the
# simulator, the headless app's subprocesses), so 4 workers keep 2 cores busy. The four short chaos runs go
# one after another on one of them (tests/conftest.py, CHAOS_RUNS): three side by side took most of both
# cores and strained their latency budgets.
# --dist loadfile keeps each test module on one worker: module fixtures (the frozen bundle, a module's
# simulator) are built once; --no-loadscope-reorder keeps tests/conftest.py's order, the longest modules
# first. TEST_WORKERS=0 runs it in this one process, as a bare `pytest` does.
TEST_WORKERS ?= 4
test: lint
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# make unit: the quick loop, tests/unit without the few that need a QApplication (marker qt) and without the
# Hypothesis fuzzers (marker fuzz: hundreds of examples each; make test runs them). No simulator.
UNIT_WORKERS ?= 2
unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit -m "not qt and not fuzz" -n $(UNIT_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

# ----------------------------------------------------------------- chaos: reliability under faults
# The long chaos run (bench/chaos/): the headless app against the simulator under random faults, SIGKILLs
# and restarts, invariants checked against the simulator's order log; ends with "N violations" (exit 1 if
# any). `make test` runs short ones (tests/reliability/test_chaos*.py). CHAOS_ARGS="--runs 1 --seed 7" etc.
# Baskets (every position of an account in one, its breach exits all) are in by default: CHAOS_ARGS=--no-baskets.
chaos: $(STAMP)
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

# The same campaign with every protection also holding a broker-held safety stop (SL-M or GTT).
# Without baskets, as it was measured (CHAOS_ARGS=--baskets adds them).
chaos-safety: $(STAMP)
	$(BIN)/python -m bench.chaos --safety-stop --soak 0 --no-baskets $(CHAOS_ARGS)
# ----------------------------------------------------------------- end of chaos

# ----------------------------------------------------------------- dist: the installable app
# dist/trailstop/ (PyInstaller one-folder bundle, installer/trailstop.spec) and, on Linux,
# dist/trailstop-VERSION-linux-ARCH.tar.gz with install.sh. An up-to-date build is reused (FORCE=1 rebuilds).
# Check it with: dist/trailstop/trailstop --self-test. Windows and macOS: .github/workflows/dist.yml.
.PHONY: icons
dist: $(STAMP)
	$(BIN)/python installer/build.py $(if $(FORCE),--force)

# Re-render the app icon set (PNG sizes, .ico, .icns) from resources/icons/trailstop.svg.
icons: $(STAMP)
	$(BIN)/python installer/make_icons.py
# ----------------------------------------------------------------- end of dist

# PNGs of the main states under Xvfb (needs the xvfb package), written to docs/screenshots/.
screenshots: $(STAMP)
	$(BIN)/python tools/screenshots.py

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
