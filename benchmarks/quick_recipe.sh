#!/usr/bin/env bash
# The documented CPU quick recipe: synthetic render of the 34 shared streams, then every table for
# both protocols with seeds and stream-bootstrap intervals (`fpus23-baselines reproduce --quick`).
# Writes $WORK/reproduce/report.md and copies it to benchmarks/results/reproduce_quick.md.
set -euo pipefail
WORK=${WORK:-/tmp/fpus23-quick}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED:-$(cd "$HERE/.." && pwd)/shared/fpus23-annotations}
BIN=$HERE/.venv/bin
mkdir -p "$WORK"
[ -d "$WORK/render" ] || "$BIN/fpus23" synth "$WORK/render" --annotations "$SHARED"
[ -f "$WORK/build/README.md" ] || "$BIN/fpus23" build "$WORK/render" --out "$WORK/build" --quiet
"$BIN/fpus23-baselines" reproduce --data "$WORK/build" --out "$WORK/reproduce" --quick --quiet
cp "$WORK/reproduce/report.md" "$HERE/benchmarks/results/reproduce_quick.md"
