# The two commands of the README:
#   make reproduce   the main job: notebooks through papermill with PROFILE (default cpu), writing reports/
#   make sweep       the mix-ratio sweep (notebook 05) with PROFILE
#   make study       the seed study (notebook 08) with STUDY_PROFILE (default study): every strategy x seed
#   make test        unit tests + pytest --nbval over the notebooks (their defaults are the ci profile)
#   make lab         JupyterLab on notebooks/ in the same environment
# Both create and fill the virtual environment themselves.

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
STUDY_PROFILE ?= study
BIN     := $(VENV)/bin

# Offline machines: a local mirror of the raw data (layout of ../shared/data, see README). When one sits
# beside the checkout and HYBRIDNB_MIRROR is unset, it is used; set HYBRIDNB_MIRROR= to force downloads.
HYBRIDNB_MIRROR ?= $(if $(wildcard ../shared/data/MANIFEST.md),$(abspath ../shared/data),)
export HYBRIDNB_MIRROR

# REPLACE=1: a run whose config changed may replace the finished report under the same run name (refused
# otherwise, naming the keys that differ)
ifdef REPLACE
export HYBRIDNB_REPLACE_RUNS := 1
endif

.PHONY: reproduce sweep study test lab venv clean-cache

venv: $(VENV)/.installed

# torch==2.13.0 is pinned in pyproject.toml: it is the CPU build, a looser pin pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# FRESH=1: recompute every run and zero-shot result instead of reusing committed ones (a from-scratch time)
reproduce: venv
	$(BIN)/python -m hybridnb pipeline --profile $(PROFILE) $(if $(FRESH),--fresh,)

# the mix-ratio sweep (notebook 05): its own target, outside make reproduce's CPU budget
sweep: venv
	$(BIN)/python -m hybridnb pipeline --profile $(PROFILE) --notebooks 05_ratio_sweep.ipynb

# the study (notebook 08): every strategy x seed at params/study.yaml's budget, runs reused by config hash;
# writes reports/$(STUDY_PROFILE)/STUDY.md, its figures and BUDGET.md (its own, outside make reproduce's)
study: venv
	$(BIN)/python -m hybridnb pipeline --profile $(STUDY_PROFILE) --notebooks 08_study.ipynb $(if $(FRESH),--fresh,)

# two pytest-xdist workers, one per core of the CI machine (each with its own reports and cache folders, one
# torch thread: tests/conftest.py); TEST_WORKERS=0 runs everything in one process
TEST_WORKERS ?= 2
test: venv
	HYBRIDNB_REPORTS=$(CURDIR)/cache/test-reports $(BIN)/python -m pytest tests \
		--nbval-lax notebooks --nbval-current-env -p no:cacheprovider --durations=30 \
		-n $(TEST_WORKERS)

# JupyterLab in the project's environment, on the notebooks (their defaults are the ci profile; widget
# progress bars through ipywidgets). Extra options: make lab LAB_ARGS="--port 8890 --no-browser"
lab: venv
	$(BIN)/jupyter lab --notebook-dir=notebooks $(LAB_ARGS)

clean-cache:
	rm -rf cache
