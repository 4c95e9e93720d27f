# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Demo knobs: point WORKSPACE/CELEBA_DIR elsewhere and scale IMAGES/EPOCHS up for real runs.
WORKSPACE ?= workspace
IMAGES ?= 2000
EPOCHS ?= 2
CELEBA_DIR ?=
# More tools.demo flags, e.g. DEMO_FLAGS=--upsampling_variant (claim 12 of the report).
DEMO_FLAGS ?=

.PHONY: install test demo study clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cpu,test]'
	touch $(STAMP)

# Two pytest workers, each taking whole test files (their module fixtures are built once).
TEST_WORKERS ?= 2

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

demo: install
	$(PY) -m tools.demo --workspace $(WORKSPACE) --num_images $(IMAGES) --epochs $(EPOCHS) \
		$(if $(CELEBA_DIR),--celeba_dir $(CELEBA_DIR),) $(DEMO_FLAGS)

# The study trained to convergence (tools/study.py): `make study CELEBA_DIR=/data/celeba` or
# `make study DATA_DIR=data96`; TIME_BUDGET (minutes) stops adding epochs when spent.
STUDY_WORKSPACE ?= study_workspace
DATA_DIR ?=
SEEDS ?= 0
KL_FACTORS ?= 1,5,20
MAX_EPOCHS ?= 40
PATIENCE ?= 3
MIN_EPOCHS ?= 1
TIME_BUDGET ?=
STUDY_FLAGS ?=

study: install
	$(PY) -m tools.study --workspace $(STUDY_WORKSPACE) --seeds $(SEEDS) \
		--kl_factors $(KL_FACTORS) --max_epochs $(MAX_EPOCHS) --patience $(PATIENCE) --min_epochs $(MIN_EPOCHS) \
		$(if $(CELEBA_DIR),--celeba_dir $(CELEBA_DIR),) $(if $(DATA_DIR),--data_dir $(DATA_DIR),) \
		$(if $(TIME_BUDGET),--time_budget_minutes $(TIME_BUDGET),) $(STUDY_FLAGS)

clean:
	rm -rf $(VENV) $(WORKSPACE) $(STUDY_WORKSPACE) *.egg-info
