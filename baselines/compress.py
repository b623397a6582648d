"""Compress a trained run, as in the paper's Tables 2 and 4: prune, retrain, quantise to INT8.

    fpus23-baselines compress runs/anatomy-resnet8-stream --prune 0.5 --int8

1. load the run's model and its splits (same dataset, protocol, input size);
2. `--prune p`: global magnitude pruning of the smallest weights (Han et al.), retraining with the
   masks in place (the run's recipe at lr x `lr_scale`), masks made permanent, batch-norm
   statistics re-estimated: the FP32 twin;
3. `--int8`: quantisation-aware training of the twin to INT8 (torchao PT2E, x86 quantizer: see
   `quantize.py`), then conversion;
4. evaluate the twin (and the INT8 model) on the run's evaluation split; cost figures: dense and
   effective MACs, dense and sparse memory, CPU latency FP32 vs INT8.

The output folder is a run folder like `train`'s (run.json, metrics.json, predictions.json,
confusion.png, model.pt = the FP32 twin) plus model.int8-qat.pt (with --int8); `export` makes it a bundle.
"""
from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from fpus23_dataset.atomic import replacing_dir

from . import prune as pruning
from . import quantize
from .bundle import INT8_STATE
from .cost import cost_figures, count_macs, cpu_latency, parameter_memory_mb
from .data import InputSpec
from .engine import recalibrate_batchnorm, train_one_epoch
from .train import TrainConfig, evaluate_model, load_run, load_splits, make_loader, seed_everything



@dataclass
class CompressConfig:
    run: str
    out: str | None = None
    prune: float = 0.0
    int8: bool = False
    data: str | None = None  # default: the dataset the run was trained on
    epochs: int = 1  # retraining epochs after pruning (and QAT epochs)
    max_steps: int | None = None
    lr_scale: float = 0.1  # fine-tuning learning rate = the run's recipe lr x this
    batch_size: int | None = None
    eval_subset: float | None = None
    seed: int = 0
    workers: int = 0
    latency_runs: int = 20
    progress: bool = True

    def resolve(self) -> "CompressConfig":
        if not 0.0 <= self.prune < 1.0:
            raise ValueError(f"--prune must be in [0, 1), got {self.prune}")
        if self.out is None:
            suffix = f"prune{round(self.prune * 100)}" + ("-int8" if self.int8 else "")
            self.out = f"{self.run.rstrip('/')}-{suffix}"
        return self


def _fine_tune(model, parameters, loader, recipe: dict, config: CompressConfig, detector: bool, what: str) -> list[dict]:
    lr = recipe["lr"] * config.lr_scale
    if recipe["optimizer"] == "adam":
        optimizer = torch.optim.Adam(parameters, lr=lr, weight_decay=recipe["weight_decay"])
    else:
        optimizer = torch.optim.SGD(parameters, lr=lr, momentum=recipe["momentum"], weight_decay=recipe["weight_decay"])
    history = []
    for epoch in range(config.epochs):
        stats = train_one_epoch(model, loader, optimizer, torch.device("cpu"), detector=detector,
                                max_steps=config.max_steps, epoch=epoch, progress=config.progress)
        history.append({"stage": what, "epoch": epoch, **stats})
    return history


def _agreement(a: list[dict], b: list[dict]) -> float | None:
    """Fraction of frames where two classifiers predict the same class."""
    if not a or "label" not in a[0]:
        return None
    return sum(x["label"] == y["label"] for x, y in zip(a, b)) / len(a)


def compress(config: CompressConfig) -> dict:
    """Prune and/or quantise a run; write the compressed run folder; returns its run.json."""
    config.resolve()
    seed_everything(config.seed)
    run, model, spec = load_run(config.run)
    task = run["task"]
    data = config.data or run["dataset"]["path"]
    split_config = TrainConfig(task=task, arch=run["arch"], protocol=run["protocol"], data=data,
                               eval_subset=config.eval_subset, seed=config.seed, progress=config.progress).resolve()
    train_rows, _, evaluation_rows, evaluation_split = load_splits(split_config)
    if evaluation_split != run["evaluation_split"]:
        raise RuntimeError(f"evaluation split changed: {evaluation_split} vs the run's {run['evaluation_split']}")
    with replacing_dir(Path(config.out), "run.json") as out:  # the folder appears complete or not at all
        summary = _compress_into(out, config, run, model, spec, train_rows, evaluation_rows, evaluation_split)
    return summary


def _compress_into(out: Path, config: CompressConfig, run: dict, model: torch.nn.Module, spec: InputSpec, train_rows,
                   evaluation_rows, evaluation_split: str) -> dict:
    task, detector = run["task"], run["task"] == "bounds"
    recipe = dict(run["recipe"], batch_size=config.batch_size or run["recipe"]["batch_size"])
    loader = make_loader(train_rows, spec, detector, True, recipe["batch_size"], config.workers, config.seed)
    cpu = torch.device("cpu")
    evaluate = dict(batch_size=recipe["batch_size"], workers=config.workers, seed=config.seed, progress=config.progress)
    title = f"{task} · {run['arch']} · pruned {config.prune:.0%}"
    history: list[dict] = []
    started = time.perf_counter()

    parent_metrics, parent_predictions = evaluate_model(model, evaluation_rows, spec, task, cpu, **evaluate)
    example = torch.rand(1, 1, spec.height, spec.width)
    dense_macs = count_macs(model, example, detector)

    if config.prune > 0:
        pruning.prune_globally(model, config.prune)
        history += _fine_tune(model, [p for p in model.parameters() if p.requires_grad], loader, recipe, config, detector, "prune")
        pruning.make_permanent(model)
        recalibrate_batchnorm(model, loader, cpu, detector=detector, progress=config.progress)
    model.eval()
    fp32_metrics, fp32_predictions = evaluate_model(model, evaluation_rows, spec, task, cpu,
                                                    confusion_png=out / "confusion.fp32.png", title=f"{title} · FP32", **evaluate)
    torch.save(model.state_dict(), out / "model.pt")
    zero = pruning.zero_macs(model, example, detector)
    cost = cost_figures(model, spec.height, spec.width, detector, config.latency_runs)  # before INT8 replaces parts
    compression = {
        "parent": {"path": str(config.run), "metrics": parent_metrics},
        "prune": config.prune,
        "sparsity": round(pruning.sparsity(model), 4),
        "dense_macs_g": round(dense_macs / 1e9, 4),
        "effective_macs_g": round((dense_macs - zero) / 1e9, 4),
        "fp32": {
            "metrics": fp32_metrics,
            "memory_dense_mb": round(parameter_memory_mb(model), 3),
            "memory_sparse_mb": round(pruning.sparse_memory_mb(model, 4), 3),
            "file_mb": round((out / "model.pt").stat().st_size / 1e6, 3),
            "cpu_latency_ms": cost["cpu_latency_ms"],
            "cpu_latency": cost["cpu_latency"],  # median, spread and machine load (cost.cpu_latency)
            "agreement_with_parent": _agreement(parent_predictions, fp32_predictions),
        },
        "int8": None,
    }
    metrics, predictions = fp32_metrics, fp32_predictions

    if config.int8:
        twin = copy.deepcopy(model)
        masks = _zero_masks(quantize.quantized_part(model, detector))
        prepared = quantize.prepare_qat(model, detector, spec.height, spec.width)
        part = quantize.quantized_part(prepared, detector)
        part = part.graph if detector else part
        # detectors: the trunk trains under fake quantisation; the FP32 heads stay as in the twin (model.pt)
        for parameter in prepared.parameters():
            parameter.requires_grad_(False)
        trainable = list(part.parameters())
        for parameter in trainable:
            parameter.requires_grad_(True)
        _keep_zeros(part, masks)
        history += _fine_tune(prepared, trainable, loader, recipe, config, detector, "int8-qat")
        _keep_zeros(part, masks, final=True)
        state = quantize.qat_state(prepared, detector)
        torch.save(state, out / INT8_STATE)
        # the same weights in FP32: what quantisation alone costs, apart from QAT's extra training
        same_weights = quantize.float_weights(twin, detector, state).eval()
        same_metrics, same_predictions = evaluate_model(same_weights, evaluation_rows, spec, task, cpu, **evaluate)
        converted = quantize.convert(prepared, detector)
        int8_memory = quantize.int8_memory_mb(converted)
        int8_model = quantize.Compiled(converted)
        if detector:
            int8_model = quantize.attach(prepared, int8_model, detector)
            int8_memory += parameter_memory_mb(prepared) - parameter_memory_mb(prepared.backbone)  # FP32 heads
        int8_metrics, int8_predictions = evaluate_model(int8_model, evaluation_rows, spec, task, cpu,
                                                        confusion_png=out / "confusion.png", title=f"{title} · INT8", **evaluate)
        int8_latency = cpu_latency(int8_model, example, detector, config.latency_runs, what="INT8 latency")
        zero_weights = sum(int((~mask).sum()) for mask in masks.values())
        masked_weights = sum(mask.numel() for mask in masks.values())
        compression["int8"] = {
            "metrics": int8_metrics,
            "quantized_part": "trunk (backbone); RPN and RoI heads FP32" if detector else "whole model",
            "method": "QAT, torchao PT2E, X86InductorQuantizer (INT8 activations per tensor, weights per channel), "
                      "run by Inductor (oneDNN)",
            "memory_dense_mb": round(int8_memory, 3),
            # pruned INT8 weights kept sparse: non-zero bytes + a 1-bit mask instead of one byte per weight
            "memory_sparse_mb": round(int8_memory - (zero_weights - masked_weights / 8) / 1e6, 3),
            "cpu_latency_ms": round(int8_latency["median_ms"], 2),
            "cpu_latency": int8_latency,
            "agreement_with_fp32": _agreement(fp32_predictions, int8_predictions),
            "same_weights_fp32_metrics": same_metrics,
            "agreement_with_same_weights_fp32": _agreement(same_predictions, int8_predictions),
        }
        metrics, predictions = int8_metrics, int8_predictions
    else:
        (out / "confusion.fp32.png").replace(out / "confusion.png")

    summary = {
        **{k: run[k] for k in ("task", "arch", "protocol", "init", "evaluation_split", "input", "model_options", "dataset")},
        "metrics": metrics,
        "precision": "int8" if config.int8 else "fp32",
        "validation_metrics": None,
        "recipe": recipe,
        "train_rows": len(train_rows), "evaluation_rows": len(evaluation_rows),
        "train_seconds": round(time.perf_counter() - started, 1), "history": history, "device": "cpu", "amp": False,
        "cost": cost,
        "compression": compression,
        "config": asdict(config),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "predictions.json").write_text(json.dumps(predictions) + "\n")
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _zero_masks(part: torch.nn.Module) -> dict[str, torch.Tensor]:
    """name -> non-zero mask of each pruned weight (names survive torch.export)."""
    return {name: weight != 0 for name, weight in part.named_parameters()
            if name.endswith("weight") and weight.dim() > 1 and bool((weight == 0).any())}


def _keep_zeros(part: torch.nn.Module, masks: dict[str, torch.Tensor], final: bool = False) -> None:
    """Pruned weights stay zero under QAT: their gradients are masked (and, at the end, the weights)."""
    for name, parameter in part.named_parameters():
        mask = masks.get(name)
        if mask is None or mask.shape != parameter.shape:
            continue
        if final:
            with torch.no_grad():
                parameter.mul_(mask)
        else:
            parameter.register_hook(lambda grad, mask=mask: grad * mask)
