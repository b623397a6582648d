#!/usr/bin/env bash
# Prepared GPU check of the full (non-quick) reproduce path, sized for < 9 minutes on one H100/H200:
#  1. `fpus23-baselines reproduce` with the paper recipe (§4.1: Adam 1e-3, full frames, flipped
#     copies; AMP on CUDA) for the searched networks (Table 4), shortened and on a procedural render,
#     so the numbers show the path works on a GPU, not what the recipe reaches (compression, CPU
#     work, is left to the CPU runs);
#  2. beside it, the detector at the quickstart's input (0.35x) trained for longer, last-stage
#     features vs the feature pyramid (--fpn), so per-class AP shows whether arms and legs are a
#     matter of training length or of resolution.
# Measured: benchmarks/results/gpu_reproduce_h200.md, gpu_detector_sweep_h200.json. Needs torch with CUDA; datasets/pycocotools/torchao may come as wheels in .whl/ (see
# /work/.library/device/README.md). Writes report.md, summary.json and detector_sweep.json to ${OUT}.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-reproduce}
PYTHON=${PYTHON:-python3}
# detector sweep: "pyramid|last-stage:input scale:steps" entries; REPRODUCE=0 runs the sweep alone
SWEEP=${SWEEP:-"last-stage:0.35:300 last-stage:0.35:1500 pyramid:0.35:300 pyramid:0.35:1500"}
REPRODUCE=${REPRODUCE:-1}
mkdir -p "$OUT"
export PYTHONPATH=$PWD
if [ -d .whl ] && [ -z "${NO_WHEELS:-}" ]; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PYTHONPATH
fi
if ! "$PYTHON" -c "import importlib.metadata as m; m.version('fpus23')" 2>/dev/null; then  # the CLIs print their version
  "$PYTHON" -m pip install -q --no-index --no-deps --no-build-isolation --target /tmp/fpus23-site .
  export PYTHONPATH=/tmp/fpus23-site:$PYTHONPATH
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 HF_DATASETS_DISABLE_PROGRESS_BARS=1
"$PYTHON" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no CUDA')"
WORK=/tmp/gpu-reproduce-work
rm -rf "$WORK" && mkdir -p "$WORK"
started=$(date +%s)
if [ "$REPRODUCE" = 1 ]; then
  "$PYTHON" -m fpus23_dataset.cli synth "$WORK/src" --streams 48 --frames 30 --plane-images 48 --workers 8 > "$WORK/synth.log" 2>&1
  "$PYTHON" -m fpus23_dataset.cli build "$WORK/src" --out "$WORK/data" --quiet > "$WORK/build.log"
fi
"$PYTHON" - "$WORK/qs" <<'PY' > "$WORK/qs.log" 2>&1 &
import sys
from pathlib import Path
from baselines.quickstart import training_data
training_data(Path(sys.argv[1]), progress=False)
PY
qs_pid=$!
if [ "$REPRODUCE" = 1 ]; then
  echo "reproduce data ready after $(( $(date +%s) - started )) s"
  timeout "${REPRODUCE_LIMIT:-470}" "$PYTHON" -m baselines.cli reproduce --data "$WORK/data" --out "$WORK/reproduce" \
    --family resnet8 --tasks orientation bounds --no-compression --seeds 2 --epochs 3 --max-steps 40 --eval-subset 160 \
    --workers 4 --quiet > "$WORK/reproduce.log" 2>&1 &
  reproduce_pid=$!
fi
wait $qs_pid || { tail -20 "$WORK/qs.log"; exit 1; }
echo "quickstart data ready after $(( $(date +%s) - started )) s"
"$PYTHON" - "$WORK" "$OUT" "$SWEEP" <<'PY'
import json, sys, time
from pathlib import Path
from baselines.quickstart import QUICKSTART
from baselines.train import TrainConfig, train
work, out, sweep = Path(sys.argv[1]), Path(sys.argv[2]), [entry.split(":") for entry in sys.argv[3].split()]
common = dict(data=str(work / "qs"), epochs=1, seed=0, progress=False, latency_runs=3, workers=4)
anatomy = QUICKSTART["anatomy"]
train(TrainConfig(task="anatomy", arch=anatomy.arch, out=str(work / "sweep" / "anatomy"), max_steps=anatomy.max_steps,
                  batch_size=anatomy.batch_size, lr=anatomy.lr, image_scale=anatomy.image_scale, **common))
results = {}
for features, scale, budget in sweep:
    name, t = f"{features}-{scale}x-{budget}", time.perf_counter()
    run = train(TrainConfig(task="bounds", arch="fasterrcnn_resnet10", out=str(work / "sweep" / name), max_steps=int(budget),
                            batch_size=4, lr=0.01, image_scale=float(scale), proposals=100, box_representation=256,
                            eval_subset=240, fpn=features == "pyramid", trunk_from=str(work / "sweep" / "anatomy"), **common))
    m = run["metrics"]
    results[name] = {"steps": int(budget), "image_scale": float(scale), "mAP": m["mAP"], "mAP50": m["mAP50"],
                     "per_class_AP": m["per_class_AP"], "per_class_AP50": m["per_class_AP50"],
                     "seconds": round(time.perf_counter() - t, 1), "device": run["device"]}
    print(name, json.dumps(results[name]), flush=True)
    (out / "detector_sweep.json").write_text(json.dumps(results, indent=2) + "\n")  # kept if a later entry is cut short
PY
echo "sweep done after $(( $(date +%s) - started )) s"
[ "$REPRODUCE" = 1 ] || exit 0
wait $reproduce_pid || { cp "$WORK/reproduce.log" "$OUT/"; ls "$WORK/reproduce/runs" > "$OUT/finished_runs.txt"; tail -30 "$WORK/reproduce.log"; exit 1; }
echo "reproduce done after $(( $(date +%s) - started )) s"
cp "$WORK/reproduce/report.md" "$WORK/reproduce/summary.json" "$OUT/"
tail -3 "$WORK/reproduce.log"
