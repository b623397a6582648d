"""Markdown tables shaped like the paper's Tables 1, 2 and 4, the paper's figures beside ours.

Every paper figure comes from `paper.py` (exact, as printed), for the same architecture and task as
the run beside it: ResNet34 runs beside Table 1 / Table 2, ResNet8 classifiers and the ResNet10
detector beside Table 4 (Appendix C). Architectures the paper did not run get no paper figure.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

from . import paper
from .cost import PAPER_MACS_LABEL, latency_text


def load_runs(paths: Sequence[Path | str]) -> list[dict]:
    """run.json of each run folder (or file), with `_path` added."""
    runs = []
    for path in paths:
        path = Path(path)
        file = path / "run.json" if path.is_dir() else path
        if not file.is_file():
            raise FileNotFoundError(f"{path}: no run.json (train writes it at the end of a run)")
        run = json.loads(file.read_text())
        run["_path"] = str(path)
        runs.append(run)
    return runs


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def _num(value) -> str:
    return "n/a" if value is None else str(value)


def paper_source(arch: str, compressed: bool = False) -> str:
    """Column header naming where the paper's figures come from, e.g. "paper (Table 4, ResNet8)"."""
    table = paper.source_table(arch, compressed)
    label = paper.ARCH_LABEL.get(arch, arch)
    return f"paper (Table {table}, {label})" if table else f"paper: no {label} figures"


def paper_cells(arch: str, task: str, metrics: Sequence[str], prune: float = 0.0, precision: str = "fp32",
                compressed: bool = False) -> list[str]:
    """The paper's printed figures for our (arch, task) cell, "—" where the paper has none."""
    table = paper.source_table(arch, compressed)
    out = []
    for metric in metrics:
        figure = paper.paper_figure(table, arch, task, metric, prune, precision) if table else None
        out.append(figure.printed if figure else "—")
    return out


_CLASSIFIER_PAPER = ("accuracy", "f1", "flops", "memory_mb")
_DETECTOR_PAPER = ("mAP", "mAR", "flops", "memory_mb")


def table1(runs: Sequence[dict]) -> str:
    """One section per protocol, one table per architecture (so each paper column names one source):
    classifiers and detectors, our quality and cost beside the paper's figures for the same arch."""
    out = ["# Baselines (Table 1 layout)", ""]
    for protocol in sorted({r["protocol"] for r in runs}):
        chosen = [r for r in runs if r["protocol"] == protocol]
        title = ("stream-grouped splits: whole recording streams held out" if protocol == "stream"
                 else "paper protocol: random per-frame splits (near-duplicate frames leak; reproduction only)")
        out += [f"## Protocol: {protocol} — {title}", ""]
        for arch in sorted({r["arch"] for r in chosen}):
            group = sorted((r for r in chosen if r["arch"] == arch), key=lambda r: r["task"])
            source = paper_source(arch)
            detector = group[0]["task"] == "bounds"
            if detector:
                head = (f"| task | model | eval split | images | mAP@[.5:.95] % | mAP@.5 % | mAR@100 % | {source} mAP | "
                        f"{source} mAR | MACs (G) at input | {PAPER_MACS_LABEL} (G) | {source} Flops | params (M) | "
                        f"memory (MB) | {source} memory (MB) | CPU ms/frame: median (p10–p90, load) | input |")
            else:
                head = (f"| task | model | eval split | frames | accuracy % | macro-F1 % | {source} accuracy | "
                        f"{source} F1 | MACs (G) at input | {PAPER_MACS_LABEL} (G) | {source} Flops | params (M) | "
                        f"memory (MB) | {source} memory (MB) | CPU ms/frame: median (p10–p90, load) | input |")
            out += [head, "|---" * (head.count("|") - 1) + "|"]
            for r in group:
                m, c = r["metrics"], r["cost"]
                if r["task"] == "bounds":
                    ours = [f"{m['images']:,}", _pct(m["mAP"]), _pct(m["mAP50"]), _pct(m["mAR100"])]
                    theirs = paper_cells(arch, "bounds", _DETECTOR_PAPER)
                else:
                    ours = [f"{m['samples']:,}", _pct(m["accuracy"]), _pct(m["macro_f1"])]
                    theirs = paper_cells(arch, r["task"], _CLASSIFIER_PAPER)
                latency = latency_text(c.get("cpu_latency")) if c.get("cpu_latency") else _num(c.get("cpu_latency_ms"))
                out.append("| " + " | ".join([r["task"], arch, r["evaluation_split"], *ours, theirs[0], theirs[1],
                                               _num(c["macs_g"]), _num(c.get("macs_224x224x3_g")), theirs[2],
                                               _num(c["params_m"]), _num(c["memory_mb"]), theirs[3], latency,
                                               c["input"]]) + " |")
            out.append("")
            if detector:
                out += ["Per-class AP, % (AP@[.5:.95]; AP@.5):", ""]
                for r in group:
                    at_50 = r["metrics"].get("per_class_AP50", {})
                    out.append(f"- {r['arch']}: " + ", ".join(f"{k} {_pct(v)}; {_pct(at_50[k]) if k in at_50 else '—'}"
                                                            for k, v in r["metrics"]["per_class_AP"].items()))
                out.append("")
        datasets = sorted({(r["dataset"].get("version"), (r["dataset"].get("fingerprint") or "")[:12]) for r in chosen})
        out.append("Dataset: " + "; ".join(f"version {v} (fingerprint {f})" for v, f in datasets)
                   + ". MACs counted by torch FlopCounterMode (FLOPs = 2 x MACs) at the input size shown and at "
                   "224x224x3, the convention of the paper's Flops column (footnote [flops]); memory = parameters and "
                   "buffers in MB (10^6 bytes); latency = median of batch-1 CPU forward passes with the 10th-90th "
                   "percentiles and the 1-minute load average before timing. Paper figures as printed (paper.py); "
                   "the paper's F1 is a fraction, ours macro-F1 in %; the paper's detector mAP/mAR: footnote [appendix-b].")
        out.append("")
    extra = ["resnet8-flops"] if any(r["arch"] == "resnet8" for r in runs) else []  # Table 4 quoted beside ResNet8
    out += paper.footnote_lines(1) + [f"- [{key}] {paper.FOOTNOTES[key]}" for key in extra] + [""]
    return "\n".join(out) + "\n"


def _row_quality(task: str, metrics: dict) -> str:
    if task == "bounds":
        return f"{_pct(metrics['mAP'])} | {_pct(metrics['mAP50'])} | {_pct(metrics['mAR100'])}"
    return f"{_pct(metrics['accuracy'])} | {_pct(metrics['macro_f1'])}"


def compression_tables(runs: Sequence[dict]) -> str:
    """Tables 2 and 4 layout: per task and architecture, pruning x precision, cost and quality, and
    the paper's figures for every (prune, precision) cell of the same arch and task (Table 2 for
    ResNet34 models, Table 4 for ResNet8 / the ResNet10 detector), those we did not run included."""
    compressed = [r for r in runs if "compression" in r]
    if not compressed:
        return ""
    out = ["# Compression (Tables 2 and 4 layout)", ""]
    for task, arch, protocol in sorted({(r["task"], r["arch"], r["protocol"]) for r in compressed}):
        chosen = sorted((r for r in compressed if (r["task"], r["arch"], r["protocol"]) == (task, arch, protocol)),
                        key=lambda r: r["compression"]["prune"])
        detector = task == "bounds"
        quality = "mAP@[.5:.95] % | mAP@.5 % | mAR@100 %" if detector else "accuracy % | macro-F1 %"
        source = paper_source(arch, compressed=True)
        wanted = _DETECTOR_PAPER if detector else _CLASSIFIER_PAPER
        names = ("mAP", "mAR", "Flops", "memory (MB)") if detector else ("accuracy", "F1", "Flops", "memory (MB)")
        paper_head = " | ".join(f"{source} {n}" for n in names)
        out += [f"## {task} · {arch} · {protocol} protocol", "",
                f"| pruned | precision | sparsity % | MACs dense (G) | MACs effective (G) | memory dense (MB) | "
                f"memory sparse (MB) | CPU ms/frame: median (p10–p90, load) | {quality} | agreement % | "
                f"INT8 vs same weights FP32 | {paper_head} |",
                "|---" * (10 + quality.count("|") + 1 + 4) + "|"]
        parent = chosen[0]["compression"]["parent"]
        cost = chosen[0]["cost"]
        done = {(0.0, "fp32")}
        out.append(f"| 0% (trained run) | FP32 | 0.0 | {chosen[0]['compression']['dense_macs_g']} | "
                   f"{chosen[0]['compression']['dense_macs_g']} | {cost['memory_mb']} | {cost['memory_mb']} | "
                   f"{_num(cost.get('cpu_latency_ms'))} | {_row_quality(task, parent['metrics'])} | — | — | "
                   + " | ".join(paper_cells(arch, task, wanted, 0.0, "fp32", compressed=True)) + " |")
        for r in chosen:
            c = r["compression"]
            for precision in ("fp32", "int8"):
                figures = c[precision]
                if not figures:
                    continue
                done.add((round(c["prune"], 2), precision))
                agreement = figures.get("agreement_with_parent" if precision == "fp32" else "agreement_with_fp32")
                same = figures.get("same_weights_fp32_metrics")
                isolated = "—"
                if same:
                    key = "mAP" if detector else "accuracy"
                    isolated = f"{100 * (figures['metrics'][key] - same[key]):+.1f} pts"
                    if figures.get("agreement_with_same_weights_fp32") is not None:
                        isolated += f", {_pct(figures['agreement_with_same_weights_fp32'])}% agree"
                latency = latency_text(figures["cpu_latency"]) if figures.get("cpu_latency") else _num(figures.get("cpu_latency_ms"))
                out.append(f"| {c['prune']:.0%} | {precision.upper()} | {100 * c['sparsity']:.1f} | {c['dense_macs_g']} | "
                           f"{c['effective_macs_g']} | {figures['memory_dense_mb']} | {figures['memory_sparse_mb']} | "
                           f"{latency} | {_row_quality(task, figures['metrics'])} | {_pct(agreement)} | {isolated} | "
                           + " | ".join(paper_cells(arch, task, wanted, c["prune"], precision, compressed=True)) + " |")
        blank = " | ".join(["not run"] + ["—"] * (5 + quality.count("|") + 1 + 2))
        for prune in paper.PRUNES:
            for precision in paper.PRECISIONS:
                if (prune, precision) not in done and paper.source_table(arch, True):
                    out.append(f"| {prune:.0%} | {precision.upper()} | {blank} | "
                               + " | ".join(paper_cells(arch, task, wanted, prune, precision, compressed=True)) + " |")
        out.append("")
    out.append("Sparsity: zero conv/linear weights after global magnitude pruning and retraining. MACs effective: "
               "multiply-accumulates with a non-zero weight. Memory dense: tensors as a dense runtime stores them "
               "(INT8: the tensors of the INT8 graph: int8 weights, FP32 biases, scales, zero points; detector heads FP32); "
               "sparse: pruned weights as non-zero values + a 1-bit mask. CPU ms: median batch-1 latency on this CPU "
               "(INT8 compiled by Inductor) with 10th-90th percentiles and the 1-minute load average before timing. "
               "Agreement: FP32 rows vs the trained run, INT8 rows vs their FP32 twin "
               "(classifiers: same predicted class). INT8 vs same weights FP32: the INT8 model against its own QAT weights run "
               "in FP32, i.e. what quantisation alone costs (QAT also trains, so INT8 vs the twin mixes both). "
               "Paper columns: the paper's printed figures for the same architecture, task, pruning and precision "
               "(paper.py); '-' is the paper's own dash (no INT8 Flops).")
    out += [""] + paper.footnote_lines(2)
    return "\n".join(out) + "\n"
