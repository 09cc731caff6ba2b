# The two commands of the README:  `make demo`  and  `make test`.
# Both create the virtual environment and install everything first.
#
# torch: on a machine whose python already has torch (a GPU machine with the user's own
# CUDA build), the venv sees it through --system-site-packages and keeps it. Otherwise the
# set-up installs $(TORCH_SPEC) first (a CPU build here; pin it explicitly, since a bare or
# open-ended `torch` pulls a multi-GB CUDA build), then the project.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
CONFIG ?= configs/tiny.yaml

.PHONY: setup demo test test-fast bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@if [ ! -x $(PY) ]; then \
	  if $(PYTHON) -c "import torch" 2>/dev/null; then \
	    echo "setup: keeping the torch that $(PYTHON) already has"; \
	    $(PYTHON) -m venv --system-site-packages $(VENV); \
	  else \
	    $(PYTHON) -m venv $(VENV); \
	  fi; \
	fi
	@$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,peer]"
	$(PY) -m pip install -q --no-deps "d3rlpy==2.8.1"  # the learning benchmark's peer; see pyproject's `peer` extra
	@touch $@

# Make a scripted 2-game dataset with real ALE, pretrain CQL+DR3 on it, evaluate in ALE beside a random policy and the data, print the table.
demo: setup
	@if [ ! -f data/tiny/scaled_ql_dataset.json ]; then \
	  $(PY) -m scaled_ql.cli prep --config $(CONFIG) --overwrite; \
	else echo "demo: reusing the dataset in data/tiny (delete it to make it again)"; fi
	$(PY) -m scaled_ql.cli pretrain --config $(CONFIG) --resume
	@echo "demo: run folder runs/tiny (checkpoints/, tb/, eval/final/eval.json, eval/final/eval.png)"

test: setup
	$(PY) -m pytest -q tests

# The unit tier: no ALE and no long training (`make test` runs every tier).
test-fast: setup
	$(PY) -m pytest -q -m "not slow and not ale" tests

bench: setup
	$(PY) -m scaled_ql.cli bench train --config $(CONFIG)
	$(PY) -m scaled_ql.cli bench sampler --config $(CONFIG)

clean:
	rm -rf runs data/tiny data/debug
