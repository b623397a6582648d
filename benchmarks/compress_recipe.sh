#!/usr/bin/env bash
# Tables 2 and 4 on this CPU: compress the quick recipe's runs (benchmarks/quick_recipe.sh) and a short
# ResNet34 run, then the transfer experiments on a FETAL_PLANES_DB stand-in. Run it alone: it
# measures latency. Writes runs and tables under $WORK.
set -euo pipefail
WORK=${WORK:-/tmp/fpus23-quick}
BIN=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin
STEPS=${STEPS:-60}
RUNS="$WORK/runs"
[ -f "$RUNS/orientation/run.json" ] || { echo "run benchmarks/quick_recipe.sh first"; exit 1; }
[ -f "$RUNS/orientation-resnet34/run.json" ] || "$BIN/fpus23-baselines" train --task orientation --arch resnet34 \
  --data "$WORK/build" --out "$RUNS/orientation-resnet34" --epochs 2 --max-steps 80 --batch-size 32 --image-scale 0.35 --quiet
mkdir -p "$WORK/compressed"
for p in 0 0.3 0.5 0.7; do
  "$BIN/fpus23-baselines" compress "$RUNS/orientation" --out "$WORK/compressed/orientation-resnet8-p$p" --prune "$p" --int8 \
    --max-steps "$STEPS" --quiet
done
for p in 0 0.5; do
  "$BIN/fpus23-baselines" compress "$RUNS/orientation-resnet34" --out "$WORK/compressed/orientation-resnet34-p$p" --prune "$p" \
    --int8 --max-steps "$STEPS" --quiet
done
"$BIN/fpus23-baselines" compress "$RUNS/bounds" --out "$WORK/compressed/bounds-resnet10-p0" --int8 --max-steps 40 \
  --eval-subset 400 --latency-runs 10 --quiet
"$BIN/fpus23-baselines" report "$WORK"/compressed/* --out "$WORK/tables2_4.md"
[ -f "$WORK/fetal_planes/FETAL_PLANES_DB_data.csv" ] || "$BIN/fpus23-baselines" fetal-planes-standin "$WORK/fetal_planes" --quiet
"$BIN/fpus23-baselines" transfer --db "$WORK/fetal_planes" --fpus23-run "$RUNS/plane" --out "$WORK/transfer" --epochs 5 --quiet
