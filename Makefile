# make demo: create/refresh .venv, install, build the embedded synthetic default and print its configs.
# make test: same .venv (+ test extras), run the test suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP_CORE := $(VENV)/.installed-core
STAMP_TEST := $(VENV)/.installed-test

.PHONY: demo test bench clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip

$(STAMP_CORE): pyproject.toml | $(PY)
	$(PIP) install --quiet -e .
	touch $@

# torch/torchvision pinned to the versions this project is tested with (from this workplace's package index;
# the Linux wheels bring their CUDA libraries, ~3 GB, used only when a GPU is present).
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1

$(STAMP_TEST): pyproject.toml $(STAMP_CORE)
	$(PIP) install --quiet $(TORCH_PINS)
	$(PIP) install --quiet -e '.[dev,baselines,cvat,fiftyone]'
	touch $@

demo: $(STAMP_CORE)
	$(VENV)/bin/fpus23 build --out fpus23 --version 0.1.0
	HF_HUB_OFFLINE=1 $(PY) -c 'from datasets import load_dataset; from fpus23_dataset.schema import CONFIGS; [print(c, load_dataset("fpus23", c)) for c in CONFIGS]'

# The FiftyOne App browser test needs Debian's Chromium; without root it skips and says why.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
		echo "chromium not installed: the FiftyOne App browser test will be skipped"

test: $(STAMP_TEST) chromium
	$(PY) -m pytest -q -ra

bench: $(STAMP_TEST)
	$(PIP) install --quiet -e '.[bench]'
	$(PY) benchmarks/bench_build.py

clean:
	rm -rf $(VENV) fpus23 .pytest_cache
