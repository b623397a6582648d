"""`fpus23-baselines reproduce`: regenerate every table, for both protocols, with honest uncertainty.

    fpus23-baselines reproduce --data fpus23-build --out runs/reproduce          # the full recipe (a GPU)
    fpus23-baselines reproduce --data fpus23-build --out runs/reproduce --quick  # a CPU, minutes

1. **Tables 1 and 4** (quality): every task, under the paper's per-frame split and our stream-grouped
   split, trained from several seeds (3 by default). Reported: mean ± sd over seeds, and a 95 %
   interval from a stream-clustered bootstrap of the test set (`stats.py`: frames of one recording are
   near-duplicates, so whole streams are resampled). Per-stream accuracy for the stream protocol.
2. **The leakage gap**: paper-protocol score minus stream-protocol score, same recipe and seeds, with a
   bootstrap interval (each protocol's test streams resampled independently).
3. **Tables 2 and 4** (compression): pruning and INT8 of one seed's stream-protocol models.
4. **Tables 5–7** (transfer): with `--fetal-planes DIR` (FETAL_PLANES_DB); without it, a stand-in
   drawn by our renderer with a different machine style, labelled as such.
5. One Markdown report, `report.md`, with the paper's printed figures beside ours and the paper's
   own tables (and their inconsistencies) as an appendix.

`--quick` trains the searched networks only (ResNet8 / Faster R-CNN ResNet10, the Table 4 rows) on
small inputs with a few steps per epoch, on a subset of the training rows; it prunes one level and
skips INT8; the report says so at the top. The full run uses `--recipe paper` (section 4.1) with
ResNet34 (Table 1) and the searched networks (Table 4); on a GPU it uses AMP (`train.py`).
"""
from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from fpus23_dataset import schema
from fpus23_dataset.errors import UserError

from . import paper
from .cost import latency_text
from .report import compression_tables
from .stats import accuracy, detection_map, group_by_stream, interval, seed_mean_distribution

PROTOCOLS = ("paper", "stream")


@dataclass(frozen=True)
class Plan:
    """How one (arch family) is trained in a reproduce run."""

    classifier: str
    detector: str
    recipe_set: str
    image_scale: float | None  # None: the recipe's
    detector_scale: float | None
    epochs: int | None  # None: the recipe's
    max_steps: int | None
    subset: float | None
    eval_subset: float | None
    proposals: int | None = None
    detector_lr: float | None = None
    detector_steps: int | None = None  # None: max_steps
    fpn: bool | None = None  # None: the recipe's
    box_representation: int | None = None


# Quick: one pass of 120 batches per classifier and 300 per detector, over all training rows (a random
# draw: many streams seen once beats few streams seen often); the detector as the quickstart's (feature
# pyramid, narrow box head). A plan of 2 epochs x 15 steps on 600 rows left every model at chance.
QUICK_PLANS = (Plan("resnet8", "fasterrcnn_resnet10", "ours", 0.35, 0.35, 1, 120, None, 240, 100, 0.01, 300, True, 256),)
FULL_PLANS = (Plan("resnet34", "fasterrcnn_resnet34", "paper", None, None, None, None, None, None),
              Plan("resnet8", "fasterrcnn_resnet10", "paper", None, None, None, None, None, None))


@dataclass
class ReproduceConfig:
    data: str
    out: str = "runs/reproduce"
    quick: bool = False
    seeds: int = 3
    tasks: tuple[str, ...] = schema.CONFIGS
    bootstrap: int = 1000
    fetal_planes: str | None = None
    workers: int = 0
    progress: bool = True
    plans: tuple[Plan, ...] = field(default=())
    shorten: dict = field(default_factory=dict)  # Plan fields overridden for every run (epochs, max_steps, ...)
    families: tuple[str, ...] | None = None  # classifier names of the plans to run (None: all of the mode's)
    compression: bool = True  # Tables 2/4's pruned and INT8 models (CPU work: INT8 is x86 only)

    def resolve(self) -> "ReproduceConfig":
        if self.seeds < 2:
            raise UserError("--seeds must be at least 2 (a standard deviation needs two runs)")
        self.shorten = {k: v for k, v in self.shorten.items() if v is not None}
        if "max_steps" in self.shorten:  # --max-steps caps the detector's steps too
            self.shorten["detector_steps"] = None
        plans = self.plans or (QUICK_PLANS if self.quick else FULL_PLANS)
        if self.families:
            plans = tuple(plan for plan in plans if plan.classifier in self.families)
            if not plans:
                raise UserError(f"--family {' '.join(self.families)}: not in this mode's plans (--quick trains resnet8 only)")
        self.plans = tuple(replace(plan, **self.shorten) for plan in plans)
        return self


def _train_one(config: ReproduceConfig, plan: Plan, task: str, protocol: str, seed: int) -> Path:
    from .train import TrainConfig, train

    detector = task == "bounds"
    arch = plan.detector if detector else plan.classifier
    out = Path(config.out) / "runs" / f"{task}-{arch}-{protocol}-seed{seed}"
    if (out / "run.json").is_file():  # finished earlier: reproduce resumes where it stopped
        return out
    train(TrainConfig(
        task=task, arch=arch, protocol=protocol, data=config.data, out=str(out), recipe_set=plan.recipe_set, seed=seed,
        epochs=plan.epochs, max_steps=(plan.detector_steps or plan.max_steps) if detector else plan.max_steps,
        subset=plan.subset, eval_subset=plan.eval_subset,
        image_scale=plan.detector_scale if detector else plan.image_scale, proposals=plan.proposals if detector else None,
        lr=plan.detector_lr if detector else None, fpn=plan.fpn if detector else None,
        box_representation=plan.box_representation if detector else None, workers=config.workers, progress=config.progress,
        latency_runs=5 if config.quick else 20))
    return out


def _load(run_dir: Path) -> tuple[dict, list[dict]]:
    return json.loads((run_dir / "run.json").read_text()), json.loads((run_dir / "predictions.json").read_text())


def _score(task: str):
    return detection_map(schema.BOX_CATEGORIES) if task == "bounds" else accuracy


def summarise(runs: Sequence[tuple[dict, list[dict]]], task: str, draws: int, seed: int = 0) -> dict:
    """Seed mean ± sd of the headline metrics, and the stream-bootstrap interval of the headline."""
    metrics = [run["metrics"] for run, _ in runs]
    keys = ("mAP", "mAP50", "mAR100") if task == "bounds" else ("accuracy", "macro_f1")
    out = {k: {"mean": float(np.mean([m[k] for m in metrics])), "sd": float(np.std([m[k] for m in metrics], ddof=1))}
           for k in keys}
    distribution = seed_mean_distribution([group_by_stream(p) for _, p in runs], _score(task), draws, seed)
    out["headline"] = keys[0]
    out["interval"] = interval(distribution)
    out["distribution"] = distribution
    out["seeds"] = len(runs)
    out["test_streams"] = len(group_by_stream(runs[0][1]))
    out["test_frames"] = len(runs[0][1])
    return out


def leakage_gap(paper_summary: dict, stream_summary: dict) -> dict:
    """Paper minus stream protocol; the interval pairs independent bootstrap draws of each."""
    a, b = paper_summary["distribution"], stream_summary["distribution"]
    key = paper_summary["headline"]
    n = min(len(a), len(b))
    return {"metric": key, "gap": paper_summary[key]["mean"] - stream_summary[key]["mean"], "interval": interval(a[:n] - b[:n])}


def per_stream(runs: Sequence[tuple[dict, list[dict]]], task: str) -> dict[str, tuple[int, float]]:
    """{stream: (frames, seed-mean score)} on the test streams."""
    score = _score(task)
    groups = [group_by_stream(p) for _, p in runs]
    return {s: (len(groups[0][s]), float(np.mean([score(g[s]) for g in groups]))) for s in sorted(groups[0])}


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def reproduce(config: ReproduceConfig) -> Path | None:
    """Train everything the tables need (resuming finished runs), then write `report.md`."""
    config.resolve()
    started = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    results: dict[tuple[str, str, str], dict] = {}
    per_stream_rows: dict[tuple[str, str], dict] = {}
    gaps: dict[tuple[str, str], dict] = {}
    run_files: list[dict] = []
    for plan in config.plans:
        for task in config.tasks:
            arch = plan.detector if task == "bounds" else plan.classifier
            for protocol in PROTOCOLS:
                runs = [_load(_train_one(config, plan, task, protocol, seed)) for seed in range(config.seeds)]
                run_files.extend(run for run, _ in runs)
                draws = config.bootstrap if task != "bounds" else max(50, config.bootstrap // 10)
                results[(arch, task, protocol)] = summarise(runs, task, draws)
                if protocol == "stream":
                    per_stream_rows[(arch, task)] = per_stream(runs, task)
            gaps[(arch, task)] = leakage_gap(results[(arch, task, "paper")], results[(arch, task, "stream")])
    if int(os.environ.get("RANK", "0")) != 0:
        return None  # torchrun: the other ranks helped train; rank 0 compresses, transfers and writes the report
    compressed = _compression(config) if config.compression else []
    transfer_md = _transfer(config)
    text = _report(config, results, gaps, per_stream_rows, run_files, compressed, transfer_md,
                   time.perf_counter() - started, load_before)
    (out / "report.md").write_text(text)
    (out / "summary.json").write_text(json.dumps({
        "config": {k: v for k, v in asdict(config).items() if k != "plans"},
        "plans": [asdict(p) for p in config.plans],
        "results": {"/".join(k): {m: v for m, v in r.items() if m != "distribution"} for k, r in results.items()},
        "leakage_gap": {"/".join(k): v for k, v in gaps.items()},
    }, indent=2, default=float) + "\n")
    return out / "report.md"


def _compression(config: ReproduceConfig) -> list[dict]:
    """Tables 2/4: prune (and INT8 in the full run) seed 0's stream-protocol models."""
    from .compress import CompressConfig, compress

    levels = (0.5,) if config.quick else paper.PRUNES[1:]
    summaries = []
    for plan in config.plans:
        for task in config.tasks:
            if config.quick and task == "bounds":
                continue  # the detector's retraining is the slow part; the full run covers it
            arch = plan.detector if task == "bounds" else plan.classifier
            parent = Path(config.out) / "runs" / f"{task}-{arch}-stream-seed0"
            for prune in levels:
                target = Path(f"{parent}-prune{round(prune * 100)}" + ("" if config.quick else "-int8"))
                if not (target / "run.json").is_file():
                    compress(CompressConfig(run=str(parent), out=str(target), prune=prune, int8=not config.quick,
                                            max_steps=config.plans[0].max_steps, eval_subset=plan.eval_subset,
                                            latency_runs=5 if config.quick else 20, progress=config.progress))
                summaries.append(json.loads((target / "run.json").read_text()))
    return summaries


def _transfer(config: ReproduceConfig) -> str:
    """Tables 5–7 on FETAL_PLANES_DB, or on a labelled stand-in when the database is not given."""
    from .fetal_planes import make_standin
    from .transfer import TransferConfig, run_transfer

    plane_runs = sorted((Path(config.out) / "runs").glob("plane-*-stream-seed0"))
    if not plane_runs:
        return "Transfer skipped: no plane classifier in this run (--tasks without plane).\n"
    db, note = config.fetal_planes, ""
    if db is None:
        db = str(Path(config.out) / "fetal-planes-standin")
        if not Path(db).is_dir():
            make_standin(db, patients=12 if config.quick else 24, images_per_class=4, progress=config.progress)
        note = ("**Stand-in, not FETAL_PLANES_DB**: the real database is not available here, so these rows show that the "
                "experiment runs, not how the phantom transfers. Pass `--fetal-planes DIR` for the real figures.\n\n")
    out = Path(config.out) / "transfer"
    if not (out / "transfer.md").is_file():
        run_transfer(TransferConfig(db=db, fpus23_run=str(plane_runs[0]), out=str(out), epochs=2 if config.quick else 15,
                                    max_steps=config.plans[0].max_steps, progress=config.progress))
    return note + (out / "transfer.md").read_text()


def _number(value) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _command(config: ReproduceConfig) -> str:
    """The command line that gives this report (defaults left out)."""
    words = ["fpus23-baselines reproduce", f"--data {config.data}", f"--out {config.out}"]
    words += ["--quick"] if config.quick else []
    words += [f"--family {family}" for family in config.families or ()]
    words += [f"--tasks {' '.join(config.tasks)}"] if tuple(config.tasks) != schema.CONFIGS else []
    words += [f"--seeds {config.seeds}"]
    words += [f"--{key.replace('_', '-')} {_number(value)}" for key, value in config.shorten.items() if value is not None]
    words += ["--no-compression"] if not config.compression else []
    words += [f"--fetal-planes {config.fetal_planes}"] if config.fetal_planes else []
    return " ".join(words)


def _report(config: ReproduceConfig, results: dict, gaps: dict, per_stream_rows: dict, runs: list[dict],
            compressed: list[dict], transfer_md: str, seconds: float, load_before: tuple[float, ...]) -> str:
    mode = "quick (CPU)" if config.quick else "full"
    lines = ["# FPUS23 baselines, reproduced", "",
             f"`{_command(config)}` — {mode}, {seconds / 60:.1f} min on {platform.node()} "
             f"({os.cpu_count()} CPUs, load average {load_before[0]:.1f} at the start).", ""]
    if config.quick:
        plan = config.plans[0]
        lines += [f"**Quick mode: not the paper's recipe.** Searched networks only ({plan.classifier}, {plan.detector}) at "
                  f"{plan.image_scale}x / {plan.detector_scale}x input, {plan.epochs} epoch(s) of at most {plan.max_steps} "
                  f"(detector: {plan.detector_steps or plan.max_steps}) steps, "
                  f"{_number(plan.subset) if plan.subset else 'all'} training rows, {_number(plan.eval_subset)} "
                  "evaluation rows; one pruning level, "
                  "no INT8; transfer for 2 epochs. The figures show that every table is produced and how uncertain "
                  "such scores are, not what the models can reach.", ""]
    if config.shorten:
        lines += ["**Shortened: " + ", ".join(f"{k.replace('_', '-')} {_number(v)}" for k, v in config.shorten.items()
                                              if v is not None) +
                  "** for every run (`fpus23-baselines reproduce` options), so these are not the recipe's figures.", ""]
    dataset = runs[0]["dataset"] if runs else {}
    lines += [f"Dataset: `{dataset.get('path')}` version {dataset.get('version')} (fingerprint "
              f"{(dataset.get('fingerprint') or '')[:12]}). Seeds: {config.seeds}. Intervals: 95 % percentile intervals "
              f"of a stream-clustered bootstrap ({config.bootstrap} draws for classifiers, "
              f"{max(50, config.bootstrap // 10)} for the detector) of the seed-averaged score.", ""]
    lines += ["## Quality (Tables 1 and 4)", "",
              "| task | model | protocol | metric | paper | ours: mean ± sd | 95 % interval | test streams / frames |",
              "|---|---|---|---|---|---|---|---|"]
    for (arch, task, protocol), r in results.items():
        table, printed = paper.baseline_figures(arch, task)
        for key, paper_key in (("mAP", "mAP"), ("mAR100", "mAR"), ("mAP50", None)) if task == "bounds" else \
                (("accuracy", "accuracy"), ("macro_f1", "f1")):
            figure = printed.get(paper_key) if paper_key else None
            paper_text = f"{figure.printed} (Table {table})" if figure else "—"
            ci = f"[{_pct(r['interval'][0])}, {_pct(r['interval'][1])}]" if key == r["headline"] else ""
            lines.append(f"| {task} | {arch} | {protocol} | {key} % | {paper_text} | {_pct(r[key]['mean'])} ± "
                         f"{_pct(r[key]['sd'])} | {ci} | {r['test_streams']} / {r['test_frames']} |")
    lines += ["", "Detector metrics are COCO's (mAP = AP@[.5:.95], mAR = AR@100); the paper names the same metrics but "
              "its Appendix B formulas are per-pixel ones (see the appendix's footnotes).", "",
              "## Leakage gap: paper protocol minus stream protocol", "",
              "Same recipe, same seeds; only the split differs. A positive gap is what near-duplicate frames across "
              "the paper's per-frame split add to the score.", "",
              "| task | model | metric | paper protocol | stream protocol | gap (points) | 95 % interval |", "|---|---|---|---|---|---|---|"]
    for (arch, task), g in gaps.items():
        key = g["metric"]
        lines.append(f"| {task} | {arch} | {key} | {_pct(results[(arch, task, 'paper')][key]['mean'])} | "
                     f"{_pct(results[(arch, task, 'stream')][key]['mean'])} | {100 * g['gap']:+.1f} | "
                     f"[{100 * g['interval'][0]:+.1f}, {100 * g['interval'][1]:+.1f}] |")
    lines += ["", "## Per-stream results (stream protocol, seed mean)", "",
              "| task | model | stream | frames | score % |", "|---|---|---|---|---|"]
    for (arch, task), rows in per_stream_rows.items():
        for stream, (frames, score) in rows.items():
            lines.append(f"| {task} | {arch} | {stream} | {frames} | {_pct(score)} |")
    lines += ["", "## Cost", "", "| task | model | input | MACs (G) at input | MACs (G) @224×224×3 | params (M) | memory (MB) | "
              "CPU ms/frame: median (p10–p90, load) |", "|---|---|---|---|---|---|---|---|"]
    seen = set()
    for run in runs:
        if (run["task"], run["arch"]) in seen:
            continue
        seen.add((run["task"], run["arch"]))
        c = run["cost"]
        lines.append(f"| {run['task']} | {run['arch']} | {c['input']} | {c['macs_g']} | {c.get('macs_224x224x3_g', '—')} | "
                     f"{c['params_m']} | {c['memory_mb']} | {latency_text(c.get('cpu_latency'))} |")
    lines += ["", compression_tables(compressed) if compressed else
              "Compression (Tables 2/4): skipped (--no-compression)." if not config.compression else "Compression: no runs.", "",
              "## Transfer (Tables 5–7)", "", transfer_md, "", "## Appendix: the paper's tables as printed", "",
              paper.paper_tables_markdown()]
    return "\n".join(lines) + "\n"
