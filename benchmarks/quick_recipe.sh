#!/usr/bin/env bash
# The documented CPU quick recipe: synthetic render of the 34 shared streams, stream protocol,
# small models at reduced input size. Writes runs/ and a Table-1-style report under $WORK.
set -euo pipefail
WORK=${WORK:-/tmp/fpus23-quick}
SHARED=${SHARED:-$(cd "$(dirname "$0")/../.." && pwd)/shared/fpus23-annotations}
BIN=$(cd "$(dirname "$0")/.." && pwd)/.venv/bin
mkdir -p "$WORK"
[ -d "$WORK/render" ] || "$BIN/fpus23" synth "$WORK/render" --annotations "$SHARED"
[ -f "$WORK/build/README.md" ] || "$BIN/fpus23" build "$WORK/render" --out "$WORK/build" --quiet
for task in orientation plane; do
  "$BIN/fpus23-baselines" train --task "$task" --arch resnet8 --data "$WORK/build" --out "$WORK/runs/$task" \
    --epochs 2 --max-steps 120 --batch-size 32 --image-scale 0.35 --workers 1 --quiet
done
# Anatomy is the hard one on held-out streams (the location tag is per stream): train it longer.
"$BIN/fpus23-baselines" train --task anatomy --arch resnet8 --data "$WORK/build" --out "$WORK/runs/anatomy" \
  --epochs 3 --max-steps 200 --batch-size 32 --image-scale 0.35 --workers 1 --quiet
"$BIN/fpus23-baselines" train --task bounds --arch fasterrcnn_resnet10 --data "$WORK/build" --out "$WORK/runs/bounds" \
  --epochs 3 --max-steps 100 --batch-size 4 --lr 0.01 --image-scale 0.5 --proposals 200 --eval-subset 400 --workers 1 --quiet
# The same anatomy recipe under the paper's per-frame split, to show what the leak is worth.
"$BIN/fpus23-baselines" train --task anatomy --arch resnet8 --protocol paper --data "$WORK/build" \
  --out "$WORK/runs/anatomy-paper" --epochs 2 --max-steps 120 --batch-size 32 --image-scale 0.35 --workers 1 --quiet
"$BIN/fpus23-baselines" report "$WORK"/runs/* --out "$WORK/table1.md"
