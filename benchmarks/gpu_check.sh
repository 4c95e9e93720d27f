#!/usr/bin/env bash
# The GPU check (issue 14, item 5): one command for a fresh NVIDIA GPU machine with network.
#
#   bash benchmarks/gpu_check.sh                  # writes gpu_check.json (OUT=... elsewhere)
#   bash benchmarks/gpu_check.sh --steps 50       # more arguments go to benchmarks.gpu
#
# What it does:
#   1. makes the venv .venv-gpu and installs the project's GPU build into it
#      (pip install -e '.[gpu]': TensorFlow with its CUDA libraries; the only download);
#   2. prints nvidia-smi;
#   3. draws 2,000 synthetic CelebA-layout faces and prepares them at 96x96, raw, into a
#      temporary folder (tools.make_synthetic_faces, tools.prepare_data; about 1,600 training
#      images), removed at the end;
#   4. runs python -m benchmarks.gpu, which measures for each preset (ae_z256, ae_z1600,
#      vae_fact5) at batch 128 and 512, with float32, bf16 and fp16, each without and with XLA:
#      train images/s fed from a constant batch and from the shards, their ratio (>= 0.95: the
#      stream keeps the GPU fed) and the GPU memory peak; a config that fails (out of memory,
#      XLA or bf16 unsupported) is recorded with its error. It writes $OUT (JSON: machine, GPU,
#      driver, versions, every config, the targets, the command line), the children's logs in
#      <OUT without .json>_logs/, and prints the table.
#
# How long: under 8 minutes in all. The install takes what the network allows (TensorFlow and
# its CUDA wheels are a few GB); the benchmark gets what is left of TOTAL_BUDGET_S (450 s), and
# the configs that no longer fit are recorded as skipped, the trainers' defaults (bf16 and
# float32 without XLA) coming first in each preset and batch size. A rerun with SKIP_INSTALL=1
# skips the install and so leaves the benchmark more time.
#
# Environment knobs: OUT (report path, default gpu_check.json), VENV (default .venv-gpu),
# PYTHON (to make the venv, default python3; >= 3.10), NUM_FACES (default 2000), STEPS (timed
# steps per feed and config, default 20), TOTAL_BUDGET_S (default 450), SKIP_INSTALL=1 (use
# VENV as it is: no network needed).
set -euo pipefail

OUT=${OUT:-gpu_check.json}
case "$OUT" in /*) ;; *) OUT="$PWD/$OUT" ;; esac  # Relative to where it was called from.
VENV=${VENV:-.venv-gpu}
PYTHON=${PYTHON:-python3}
NUM_FACES=${NUM_FACES:-2000}
STEPS=${STEPS:-20}
TOTAL_BUDGET_S=${TOTAL_BUDGET_S:-450}
# Seconds kept back from the benchmark's budget: its GPU probe (a TensorFlow start), a child
# stopped at the budget's end (benchmarks.gpu.KILL_GRACE_S) and writing the report.
RESERVE_S=40
MIN_BENCHMARK_S=60

cd "$(dirname "${BASH_SOURCE[0]}")/.."  # The repository root.

step() { printf '\n== %s (%d s so far)\n' "$1" "$SECONDS"; }

step "venv $VENV with the GPU build"
if [[ "${SKIP_INSTALL:-0}" != 1 ]]; then
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
    echo "error: $PYTHON is older than Python 3.10; set PYTHON to a newer one" >&2; exit 1; }
  [[ -x "$VENV/bin/python" ]] || "$PYTHON" -m venv "$VENV"
  # Git ignores the venv (the repository's .gitignore names .venv/ only).
  printf '*\n' > "$VENV/.gitignore"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -e '.[gpu]'
fi
PY="$VENV/bin/python"
[[ -x "$PY" ]] || { echo "error: $PY does not exist; run without SKIP_INSTALL=1" >&2; exit 1; }
"$PY" -c 'import tensorflow as tf; print("TensorFlow", tf.__version__)'

step "nvidia-smi"
if command -v nvidia-smi >/dev/null; then
  nvidia-smi
else
  echo "warning: nvidia-smi not found (benchmarks.gpu still asks TensorFlow for GPUs)" >&2
fi

DATA=$(mktemp -d "${TMPDIR:-/tmp}/celeba_gpu_check.XXXXXX")
trap 'rm -rf "$DATA"' EXIT

step "$NUM_FACES synthetic faces, prepared at 96x96 raw in $DATA"
"$PY" -m tools.make_synthetic_faces --output_dir "$DATA/faces" --num_images "$NUM_FACES" \
  --seed 0
"$PY" -m tools.prepare_data --source_dir "$DATA/faces" --output_dir "$DATA/faces96" \
  --image_size 96 --encoding raw --noprogress

budget=$((TOTAL_BUDGET_S - SECONDS - RESERVE_S))
if ((budget < MIN_BENCHMARK_S)); then
  echo "error: the install and the data took $SECONDS s of TOTAL_BUDGET_S $TOTAL_BUDGET_S;" \
    "under $MIN_BENCHMARK_S s are left for the benchmark. Rerun with SKIP_INSTALL=1, or" \
    "raise TOTAL_BUDGET_S" >&2
  exit 1
fi

step "benchmarks.gpu with a budget of $budget s"
"$PY" -m benchmarks.gpu --data_dir "$DATA/faces96" --output_json "$OUT" \
  --presets ae_z256,ae_z1600,vae_fact5 --batch_sizes 128,512 --precisions float32,bf16,fp16 \
  --xla both --steps "$STEPS" --budget_s "$budget" "$@"

step "done: $OUT"
