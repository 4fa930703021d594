# freshrec: `make run` and `make test` each do all the set-up they need (a .venv with the CPU build of
# torch; for the tests, Debian's chromium too), on a fresh clone, with or without ../shared beside it.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
# Where the CPU wheel of torch comes from on a machine without a local wheel, e.g.
#   make test PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PIP_TORCH_ARGS ?=
# The real data sets: made absolute once, so a test that runs the CLI from another folder finds them too.
FRESHREC_DATA ?= ../shared/data
override FRESHREC_DATA := $(abspath $(FRESHREC_DATA))
export FRESHREC_DATA
# More flags for `freshrec run`, e.g. make run RUN_ARGS="--exit-at-end --limit 5000 --port 8001"
RUN_ARGS ?=
# sudo for apt-get when not root and sudo exists
SUDO := $(shell [ "$$(id -u)" != 0 ] && command -v sudo)

.PHONY: setup venv chromium promtool run test bench clean

setup: venv chromium promtool

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(PIP_TORCH_ARGS) "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[test,federated,content]"
	touch $@

# Debian's chromium, for the browser test of the A/B report; apt-get only when it is missing.
chromium:
	@command -v chromium >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q chromium >/dev/null; }

# Debian's prometheus, for promtool (tests check the alert rules in deploy/prometheus with it).
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -q >/dev/null && \
		DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -q --no-install-recommends prometheus >/dev/null; }

run: venv
	rm -rf out/state
	$(BIN)/freshrec run --format movielens-100k --fallback simulator --state out/state --port 8000 $(RUN_ARGS)

# Three lanes at once: the tests that work the cores, and two of tests that mostly wait on the processes
# they start (the soak tests; the others marked `beside`), each lane's output printed when all are done;
# the target fails if any lane fails.
test: setup
	@lanes=$$(mktemp -d); \
	$(BIN)/python -m pytest -q --durations=10 -m soak --basetemp=$$lanes/soak >$$lanes/soak.log 2>&1 & soaking=$$!; \
	$(BIN)/python -m pytest -q --durations=10 -m beside --basetemp=$$lanes/beside >$$lanes/beside.log 2>&1 & waiting=$$!; \
	$(BIN)/python -m pytest -q --durations=20 -m "not soak and not beside"; rest=$$?; \
	wait $$soaking; soaked=$$?; wait $$waiting; waited=$$?; \
	echo "--- the soak tests:"; cat $$lanes/soak.log; echo "--- the tests beside:"; cat $$lanes/beside.log; \
	rm -rf $$lanes; test $$rest -eq 0 -a $$soaked -eq 0 -a $$waited -eq 0

bench: venv
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/embedding.py
	$(BIN)/python bench/train.py
	$(BIN)/python bench/serve.py
	$(BIN)/python bench/predict_path.py
	$(BIN)/python bench/serve.py --attach --baseline --workers 2 --rate 1000 --recommend-rate 100 \
		--sweep 200,400,600,800,1000,1200,1500,2000 --servers-on all --table-ids 4000000
	$(BIN)/python bench/torn_reads.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/quickstart.py
	$(BIN)/python bench/join.py
	$(BIN)/python bench/produce.py
	$(BIN)/python bench/quality.py
	$(BIN)/python bench/gpu_check.py
	$(BIN)/python bench/distributed.py
	$(BIN)/python bench/autoscale.py
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python bench/versus_vw.py
	$(BIN)/python bench/open_bandit_signal.py

clean:
	rm -rf $(VENV) out *.egg-info
