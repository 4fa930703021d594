#!/usr/bin/env bash
# The device checks of the GPU work (README "On a GPU" and "Many workers"), as one prepared script for
# a lent GPU machine, whose Python (3.12, with torch, numba, pyarrow, pytest...) lacks some of
# freshrec's packages and which reaches no package registry.
#
#   bench/device_check.sh prepare [PYTHON_VERSION]   # here: the missing packages' wheels into .whl/,
#                                                     # MovieLens-100k into .devdata/ (both ignored by git)
#   bench/device_check.sh run                         # there: install them, then the CUDA tests, NVML's
#                                                     # answer, bench/gpu_check.py, bench/distributed.py
#
# With the device tool: `run` with carry [".whl", ".devdata"], timeout_s 590, and the command
# `bash bench/device_check.sh run`. Everything it measures lands in $OUT (default out/device-check:
# tests.log, nvml.json, topo.txt, gpu_check.json, distributed.json); each stage has its own time
# limit, so a hang in one leaves the others their time. PYTHON names the interpreter (default
# python3). Without .whl/ it uses what PYTHON has; without a GPU every stage says so.
set -u
PYTHON=${PYTHON:-python3}
# freshrec's packages (and theirs) that the device image lacks, at the versions `make venv` installs here
WHEELS="pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 orjson==3.13.0
msgspec==0.23.0 fastapi==0.138.2 starlette==1.3.1 uvicorn==0.49.0 httptools==0.9.0 confluent-kafka==2.16.2
faiss-cpu==1.15.1"

prepare() {
    local version=${1:-3.12} root
    root=$(git rev-parse --show-toplevel) || exit 1
    cd "$root" || exit 1
    for ignored in /.whl/ /.devdata/; do
        grep -qxF "$ignored" .git/info/exclude 2>/dev/null || echo "$ignored" >> .git/info/exclude
    done
    rm -rf .whl && mkdir -p .whl .devdata
    # shellcheck disable=SC2086
    "$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version "$version" --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl $WHEELS || exit 1
    local data=${FRESHREC_DATA:-../shared/data}
    if [ -d "$data/movielens-100k" ]; then
        cp -r "$data/movielens-100k" .devdata/
    else
        echo "no $data/movielens-100k: the checks will learn from the simulator" >&2
    fi
    du -sh .whl .devdata
}

run() {
    local out=${OUT:-out/device-check} site=${TMPDIR:-/tmp}/freshrec-device-site
    mkdir -p "$out"
    if compgen -G ".whl/*.whl" > /dev/null; then
        "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
            .whl/*.whl || exit 1
    fi
    export PYTHONPATH=$site:$PWD FRESHREC_DATA=$PWD/.devdata PYTHONUNBUFFERED=1
    nvidia-smi -L || echo "no nvidia-smi here"
    nvidia-smi topo -m > "$out/topo.txt" 2>&1
    timeout 20 "$PYTHON" -c "import json; from freshrec.devices import read_nvml; print(json.dumps(read_nvml()))" \
        > "$out/nvml.json"
    local tests=(tests/gpu tests/devices tests/cluster/test_group_step.py
                 tests/embedding/test_table.py::test_rows_on_cuda_with_the_index_on_the_host)
    timeout 230 "$PYTHON" -m pytest -q -p no:cacheprovider -rfEs "${tests[@]}" 2>&1 | tee "$out/tests.log" | tail -40
    timeout 180 "$PYTHON" bench/gpu_check.py --json-out "$out/gpu_check.json"
    timeout 120 "$PYTHON" bench/distributed.py --device cuda --limit 20000 | tee "$out/distributed.json"
}

case "${1:-}" in
    prepare) shift; prepare "$@" ;;
    run) run ;;
    *) echo "usage: bench/device_check.sh prepare [PYTHON_VERSION] | run" >&2; exit 2 ;;
esac
