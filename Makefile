# The two commands of the README:
#   make reproduce   the main job: notebooks through papermill with PROFILE (default cpu), writing reports/REPORT.md
#   make test        unit tests + pytest --nbval over the notebooks (their defaults are the ci profile)
# Both create and fill the virtual environment themselves. Others (docs/reproduce.md):
#   make sweep       the mix-ratio sweeps, text and image-text, every point x seed (notebook 05), then REPORT.md
#   make probes      the recipe's probes on the held-out validation pool (python -m hybridnb recipe --stages probes)
#   make st-compare  sentence-transformers' trainer against hybridnb's on the recipe, every seed (notebook 08)
#   make lab         JupyterLab on notebooks/ in the same environment

PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= cpu
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

.PHONY: reproduce sweep probes st-compare test lab venv clean-cache

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

# the mix-ratio sweeps (notebook 05), text and image-text, 3 seeds a point: their own target, outside make reproduce
sweep: venv
	$(BIN)/python -m hybridnb pipeline --profile $(PROFILE) --notebooks 05_ratio_sweep.ipynb

# SentenceTransformerTrainer with hybridnb's sampler, loss, optimizer and checkpoint rule against hybridnb's own trainer,
# every seed (notebook 08; hybridnb's runs reused, the sentence-transformers runs trained: ~12 min each on 2 cores),
# executed copy in reports/$(PROFILE)/notebooks/: its own target, outside make reproduce
st-compare: venv
	$(BIN)/python -m hybridnb pipeline --profile $(PROFILE) --notebooks 08_sentence_transformers.ipynb

# the recipe's probes (input and length, temperature, budget on the held-out validation pool): hours on 2 cores
probes: venv
	$(BIN)/python -m hybridnb recipe --profile $(PROFILE) --stages probes

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
