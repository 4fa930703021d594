# freshrec: `make run` and `make test` each do all the set-up (a .venv with the CPU build of torch).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# Where the CPU wheel of torch comes from on a machine without a local wheel, e.g.
#   make test PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PIP_TORCH_ARGS ?=
export FRESHREC_DATA ?= ../shared/data

.PHONY: setup run test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

run: setup
	rm -rf out/state
	$(BIN)/freshrec run --format movielens-100k --fallback simulator --state out/state --port 8000

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/embedding.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/engine.py

clean:
	rm -rf $(VENV) out *.egg-info
