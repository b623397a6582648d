#!/usr/bin/env bash
# Prepared GPU check (< 5 minutes on one H100/H200): AMP training of one classifier (ResNet34,
# full-size frames) and the detector (Faster R-CNN ResNet34) for a few hundred steps on a freshly
# rendered synthetic set. Needs torch with CUDA; datasets/pycocotools may come as wheels in .whl/.
# Writes run summaries to ${OUT:-/tmp/gpu-check}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
STEPS=${STEPS:-200}
EVAL=${EVAL_SUBSET:+--eval-subset $EVAL_SUBSET}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
"$PYTHON" - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
PY
WORK=/tmp/gpu-work
rm -rf "$WORK"
mkdir -p "$WORK"
"$PYTHON" -m fpus23_dataset.cli synth "$WORK/src" --streams 16 --frames 60 --plane-images 48 --workers 8 > "$WORK/synth.log" 2>&1
tail -1 "$WORK/synth.log"
"$PYTHON" -m fpus23_dataset.cli build "$WORK/src" --out "$WORK/data" --quiet > "$WORK/build.log"
head -1 "$WORK/build.log"
"$PYTHON" -m baselines.cli train --task orientation --arch resnet34 --data "$WORK/data" --out "$WORK/runs/orientation" \
  --epochs 10 --max-steps $((STEPS / 10)) --batch-size 32 --workers 8 --latency-runs 3 $EVAL --quiet
"$PYTHON" -m baselines.cli train --task bounds --arch fasterrcnn_resnet34 --data "$WORK/data" --out "$WORK/runs/bounds" \
  --epochs 3 --max-steps $((STEPS / 3)) --batch-size 8 --workers 8 --latency-runs 3 $EVAL --quiet
"$PYTHON" - "$WORK/runs" "$OUT" <<'PY'
import json, sys, pathlib
runs, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
summary = {}
for run in sorted(runs.iterdir()):
    r = json.loads((run / "run.json").read_text())
    summary[run.name] = {"arch": r["arch"], "device": r["device"], "amp": r["amp"], "train_seconds": r["train_seconds"],
                         "images_per_s": [h["images_per_s"] for h in r["history"]],
                         "metrics": {k: v for k, v in r["metrics"].items() if not isinstance(v, (list, dict))}}
(out / "gpu_check.json").write_text(json.dumps(summary, indent=2))
print(json.dumps(summary, indent=2))
PY
