#!/usr/bin/env bash
# Make a demo dataset of schema-v1 logs from the ground-truth synthetic world.
#   scripts/make_demo_data.sh [N_CONVERSATIONS=20000] [OUT_DIR=demo_data] [SEED=0]
# Writes OUT_DIR/data/turns.parquet and OUT_DIR/data/customers.parquet, then validates them.
set -euo pipefail
n=${1:-20000}
out=${2:-demo_data}
seed=${3:-0}
supportrl=${SUPPORTRL:-supportrl}
"$supportrl" generate generate.n_conversations="$n" seed="$seed" hydra.run.dir="$out"
"$supportrl" validate data.turns="$out/data/turns.parquet" \
    data.customers="$out/data/customers.parquet" hydra.run.dir="$out/validate"
