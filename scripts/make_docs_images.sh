#!/usr/bin/env bash
# Regenerate the README's images from a run: a small pipeline multirun, then `report`.
#   scripts/make_docs_images.sh [OUT]     (OUT: scratch folder, default a temporary one)
# Writes docs/img/report_forest.png and docs/img/report_learning_curves.png.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-$(mktemp -d)}"
SUPPORTRL="${SUPPORTRL:-.venv/bin/supportrl}"
"$SUPPORTRL" pipeline -m agent=linucb,lints seed=0,1,2 \
    generate.n_conversations=2000 train.total_steps=4000 \
    fit.simulated_conversations=2000 fit.true_value_conversations=5000 \
    ope.n_refit=10 loop.rounds=0 logger.progress=false \
    "hydra.sweep.dir=$OUT/multirun" "paths.output_dir=$OUT"
"$SUPPORTRL" report "dir=$OUT/multirun" "hydra.run.dir=$OUT/report" "paths.output_dir=$OUT"
cp "$OUT/report/forest.png" docs/img/report_forest.png
cp "$OUT/report/learning_curves.png" docs/img/report_learning_curves.png
echo "docs/img: report_forest.png, report_learning_curves.png from $OUT"
