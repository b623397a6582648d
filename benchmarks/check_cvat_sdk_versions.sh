#!/usr/bin/env bash
# Runs the cvat-sdk tests of tests/test_cvat_plugin.py (the function through cvat-sdk's driver, and the README's
# cvat-cli command, against tests/fake_cvat.py) with other cvat-sdk/cvat-cli releases.
#
#   benchmarks/check_cvat_sdk_versions.sh 2.44.0 2.80.0 ...
#
# Each version gets an overlay venv, /tmp/sdk-venv-<version> (SDK_VENV_ROOT to move it): cvat-sdk==<version>,
# cvat-cli==<version> and the dependencies pip picks for them are installed there, and a .pth file then adds the main venv's
# site-packages *after* them, so cvat_sdk (driver, client, models) and its own dependencies come from the
# overlay, and torch/flask/pytest from the main venv (torch is gigabytes; installing it per version
# would prove nothing more about the SDK). The test prints the cvat_sdk version and path it ran with.
#
# The tests' bundles are trained once (the quick_runs recipe of tests/conftest.py) into
# $SDK_CHECK_DATA/bundles and handed to every run through FPUS23_TEST_BUNDLES, so a version takes
# seconds, not the three minutes of a fresh quick_runs.
set -euo pipefail
cd "$(dirname "$0")/.."
MAIN_PY=${MAIN_PY:-/work/main/.venv/bin/python}
BASE_PY=${BASE_PY:-python3.11}
SDK_VENV_ROOT=${SDK_VENV_ROOT:-/tmp}
SDK_CHECK_DATA=${SDK_CHECK_DATA:-/tmp/fpus23-sdk-check}
[ $# -gt 0 ] || { echo "usage: $0 VERSION..." >&2; exit 2; }

if [ ! -f "$SDK_CHECK_DATA/bundles/.done" ]; then
    HF_HUB_OFFLINE=1 "$MAIN_PY" - "$SDK_CHECK_DATA" <<'PY'
import sys
from pathlib import Path
sys.path.insert(0, "tests")
from conftest import QUICK_TRAINING
from baselines.cli import main as baselines_main
from fpus23_dataset.build import build
from fpus23_dataset.synth import render_procedural
root = Path(sys.argv[1])
render_procedural(root / "src", streams=16, frames_per_stream=8, plane_images=24, seed=3, workers=2, progress=False)
build(root / "src", root / "built", "1.2.3", progress=False)
for task, options in QUICK_TRAINING.items():
    assert baselines_main(["train", "--task", task, "--data", str(root / "built"), "--out", str(root / "runs" / task),
                           "--eval-subset", "24", "--latency-runs", "3", "--quiet", *options]) == 0
    assert baselines_main(["export", str(root / "runs" / task), str(root / "bundles" / task)]) == 0
(root / "bundles" / ".done").touch()
PY
fi

MAIN_SITE=$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
status=0
for version in "$@"; do
    venv="$SDK_VENV_ROOT/sdk-venv-$version"
    if [ ! -f "$venv/.installed" ]; then
        rm -rf "$venv"
        "$BASE_PY" -m venv "$venv"
        if ! "$venv/bin/python" -m pip install --quiet "cvat-sdk==$version" "cvat-cli==$version" >"$venv.pip.log" 2>&1; then
            echo "== cvat-sdk $version: pip install failed ($venv.pip.log)"; status=1; continue
        fi
        site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        echo "import site; site.addsitedir('$MAIN_SITE')" > "$site/zz_fpus23_main_venv.pth"
        touch "$venv/.installed"
    fi
    echo "== cvat-sdk $version"
    if FPUS23_TEST_BUNDLES="$SDK_CHECK_DATA/bundles" \
        "$venv/bin/python" -m pytest tests/test_cvat_plugin.py -k "cvat_sdk_driver or readme_cvat_cli" -q -rA -p no:cacheprovider; then
        echo "== cvat-sdk $version: PASS"
    else
        echo "== cvat-sdk $version: FAIL"; status=1
    fi
done
exit $status
