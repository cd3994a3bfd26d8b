# optimhub developer entry points. The README shows two: `make demo` and `make test`.
#
# Both create .venv when it is missing and install the project into it (editable, with every
# backend extra and the dev tools) plus the example third-party plugin. torch is installed
# only when .venv has none, and then as the CPU build pinned in constraints.txt; an existing
# torch is never replaced. Re-running is fast: the install is redone only when
# pyproject.toml, constraints.txt or the example plugin's pyproject.toml change.
#
#   make demo                 optimhub compare: nine optimizers on a tiny model, table + PNG
#   make test                 run the whole test suite (pytest, tests/)
#   make test PYTEST_ARGS=-x  pass extra arguments to pytest
#   make PYTHON=python3.12 …  build .venv with another interpreter (only when .venv is new)

PYTHON ?= python3
VENV ?= .venv
PYTEST_ARGS ?=

VPY := $(VENV)/bin/python
PIP := $(VPY) -m pip
EXAMPLE_PLUGIN := examples/optimhub-example-plugin
STAMP := $(VENV)/.optimhub-installed
# Present when torch came from constraints.txt: later installs keep that pin.
TORCH_PINNED := $(VENV)/.optimhub-torch-from-constraints
# Otherwise the torch that was already there is pinned to its own version.
TORCH_KEEP := $(VENV)/optimhub-keep-torch.txt

.DEFAULT_GOAL := help

.PHONY: help demo test install lint clean distclean

help:
	@echo "make demo   compare nine optimizers on a tiny model (table, compare-out/compare.png)"
	@echo "make test   run the test suite"
	@echo "(both create .venv and install optimhub into it first)"
	@echo "helpers: make install | lint | clean | distclean"

# About 1.5 minutes on 2 busy CPU cores (measured). examples/demo.py shows the Python API.
DEMO_OPTIMIZERS := adamw_torch apollo_adamw apollo_mini galore_adamw adamw_8bit lomo \
	schedule_free_adamw grokadamw adafactor
DEMO_STEPS ?= 300

demo: $(STAMP)
	$(VENV)/bin/optimhub compare $(DEMO_OPTIMIZERS) --steps $(DEMO_STEPS)

test: $(STAMP)
	$(VPY) -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(VPY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml constraints.txt $(EXAMPLE_PLUGIN)/pyproject.toml | $(VPY)
	@if $(VPY) -c "import torch" >/dev/null 2>&1; then \
		echo "torch already in $(VENV): $$($(VPY) -c 'import torch; print(torch.__version__)') (kept)"; \
	else \
		echo "installing torch into $(VENV) from constraints.txt (CPU build)"; \
		$(PIP) install -c constraints.txt torch && touch $(TORCH_PINNED); \
	fi
	@if [ -f $(TORCH_PINNED) ]; then \
		pin="-c constraints.txt"; \
	else \
		$(VPY) -c "import importlib.metadata as m; print('torch==' + m.version('torch'))" \
			> $(TORCH_KEEP) && pin="-c $(TORCH_KEEP)"; \
	fi; \
	echo "$(PIP) install $$pin -e .[all,dev] -e ./$(EXAMPLE_PLUGIN)"; \
	$(PIP) install $$pin -e ".[all,dev]" -e "./$(EXAMPLE_PLUGIN)"
	@touch $@

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf build dist *.egg-info $(EXAMPLE_PLUGIN)/*.egg-info $(EXAMPLE_PLUGIN)/build compare-out \
		.pytest_cache .ruff_cache .hypothesis
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
