"""Train and evaluate one model on one FPUS23 config, under a named recipe set.

`--recipe paper` follows the paper wherever it speaks (Prabakaran et al., 2023):
- Adam, learning rate 0.001, StepLR step 20, gamma 0.1, for every model (§4.1: "The learning rate for
  all models was set to 0.001 using the Adam Optimizer with a step size of 20 and gamma = 0.1");
- 15 epochs (§4.1: the ResNet34 is retrained "for 15 epochs"; the paper gives no separate count for
  the detector, so 15 is used for every model) with cross-entropy (§4.1);
- ImageNet initialisation of ResNet34 trunks (§4.1: "pre-trained using the ImageNet"), when the
  weights are provided offline (`models.imagenet_weights_path()`); without them the run starts from
  scratch and run.json says so. ResNet8/10 (Appendix C's searched networks) have no ImageNet weights;
- a mirrored copy of every training frame added to the set (§4.2);
- plane classes balanced (§3.2: the smaller diagnostic-plane classes "were augmented ... to ensure
  equal representation"; we repeat their rows, as the paper does not say how it augmented);
- full-size frames (§4.1: the first layer is adapted "to accommodate the custom input data dimensions").
Where the paper is silent (batch size, the detector's proposals and anchors) the values are ours.

`--recipe ours` (the default) is this project's choice and is documented as ours: the same Adam
schedule for classifiers but a random horizontal flip per draw instead of doubling the set; for the
detector, SGD (lr 0.005, momentum 0.9, weight decay 5e-4, StepLR step 3) as in torchvision's detection
reference, 10 epochs, regions pooled from a feature pyramid (`--no-fpn`: the last stage alone; ResNet10 at
0.35x on synthetic renders: mAP@.5 0.24 vs 0.24 after 300 steps and 0.45 vs 0.38 after 1,500, at 1.10 vs
1.32 GMACs a frame; benchmarks/results/gpu_detector_sweep_h200.json); scratch initialisation; the
architecture's default input size. The paper recipe pools from the last stage: §4.1 names only "a
modified Faster-RCNN with our ResNet34 backbone", so neither choice is the paper's.

The protocol is the second axis: `stream` (default) holds out whole recording streams; `paper`
reproduces the per-frame random split (Appendix A: 8:1:1), whose scores leak near-duplicate frames.

Single process: `fpus23-baselines train --task orientation`. Several GPUs: `torchrun --nproc_per_node N
-m baselines.cli train ...` (DistributedDataParallel; rank 0 writes).
"""
from __future__ import annotations

import json
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fpus23_dataset import schema

from .cost import cost_figures
from .data import ClassificationDataset, DetectionDataset, InputSpec, collate_detection
from .calibrate import classifier_thresholds, detector_thresholds
from .coco_eval import coco_metrics
from .engine import predict_boxes, predict_classes, train_one_epoch
from .metrics import classification_metrics, plot_confusion
from .models import IMAGENET_ARCHS, build_model, fitted_anchors, load_trunk, default_arch, default_image_scale, imagenet_weights_path, is_detector

# Per recipe set and model kind. Keys: optimiser settings, epochs, batch size, initialisation,
# flip mode (see data.py) and whether plane classes are balanced.
RECIPES = {
    "paper": {
        "classifier": {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "step_size": 20, "gamma": 0.1,
                       "epochs": 15, "batch_size": 16, "init": "imagenet", "flip": "copies", "balance_planes": True},
        "detector": {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "step_size": 20, "gamma": 0.1,
                     "epochs": 15, "batch_size": 4, "init": "imagenet", "flip": "copies", "balance_planes": False,
                     "fpn": False},
    },
    "ours": {
        "classifier": {"optimizer": "adam", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0, "step_size": 20, "gamma": 0.1,
                       "epochs": 15, "batch_size": 16, "init": "scratch", "flip": "random", "balance_planes": False},
        "detector": {"optimizer": "sgd", "lr": 0.005, "momentum": 0.9, "weight_decay": 5e-4, "step_size": 3, "gamma": 0.1,
                     "epochs": 10, "batch_size": 4, "init": "scratch", "flip": "random", "balance_planes": False,
                     "fpn": True},
    },
}
# Input size of the paper recipe: full frames (§4.1), whatever the architecture.
PAPER_IMAGE_SCALE = 1.0


@dataclass
class TrainConfig:
    task: str
    arch: str | None = None
    protocol: str = "stream"
    data: str = "fpus23"
    out: str | None = None
    recipe_set: str = "ours"  # "ours" | "paper" (see the module docstring)
    init: str | None = None  # None: the recipe's
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float | None = None
    step_size: int | None = None
    gamma: float | None = None
    seed: int = 0
    max_steps: int | None = None  # per epoch
    subset: float | None = None  # a fraction (<= 1) or a count (> 1) of training rows
    eval_subset: float | None = None
    image_scale: float | None = None  # None: the architecture's default (models.DEFAULT_IMAGE_SCALE)
    proposals: int | None = None  # detector: RPN proposals kept (None: torchvision's defaults)
    box_representation: int | None = None  # detector: box head width (None: torchvision's 1024)
    fpn: bool | None = None  # detector: a feature pyramid over stages 2-4 (models.build_detector); None: the recipe's
    workers: int = 0
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    progress: bool = True
    latency_runs: int = 20
    flip: str | None = None  # None: the recipe's ("random" | "copies" | "none")
    trunk_from: str | None = None  # detector: a classifier run folder whose trunk starts this one's (models.load_trunk)
    recipe: dict = field(default_factory=dict)
    init_note: str | None = None

    def resolve(self) -> "TrainConfig":
        schema.task_classes(self.task)
        if self.recipe_set not in RECIPES:
            raise ValueError(f"recipe {self.recipe_set!r}: expected one of {', '.join(RECIPES)}")
        self.arch = self.arch or default_arch(self.task)
        if is_detector(self.arch) != (self.task == "bounds"):
            raise ValueError(f"arch {self.arch} does not fit task {self.task}")
        recipe = dict(RECIPES[self.recipe_set]["detector" if self.task == "bounds" else "classifier"])
        recipe["balance_planes"] = recipe["balance_planes"] and self.task == schema.PLANE.key
        for key in recipe:
            value = getattr(self, key, None)
            if value is not None:
                recipe[key] = value
        if self.init is None:  # the recipe's choice; ImageNet only where weights exist for the arch and are provided
            recipe["init"], self.init_note = _available_init(recipe["init"], self.arch)
        self.recipe, self.init = recipe, recipe["init"]
        self.out = self.out or f"runs/{self.task}-{self.arch}-{self.protocol}"
        if self.image_scale is None:
            self.image_scale = PAPER_IMAGE_SCALE if self.recipe_set == "paper" else default_image_scale(self.arch)
        return self


def _available_init(wanted: str, arch: str) -> tuple[str, str | None]:
    if wanted != "imagenet":
        return wanted, None
    if arch not in IMAGENET_ARCHS:
        return "scratch", f"{arch} has no ImageNet weights (a searched network): trained from scratch"
    if not imagenet_weights_path().is_file():
        return "scratch", f"ImageNet weights not provided at {imagenet_weights_path()}: trained from scratch"
    return "imagenet", None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _distributed() -> tuple[int, int, int]:
    """(world size, rank, local rank) under torchrun; (1, 0, 0) in a plain process."""
    world, local_rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return world, int(os.environ.get("RANK", "0")), local_rank


def _device(config: TrainConfig, local_rank: int) -> torch.device:
    if config.device != "auto":
        return torch.device(config.device)
    return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")


def _subset(rows, amount: float | None, seed: int):
    if amount is None:
        return rows
    count = int(amount) if amount > 1 else max(1, round(len(rows) * amount))
    return rows.shuffle(seed=seed).select(range(min(count, len(rows))))


def dataset_identity(data: str | Path) -> dict:
    marker = Path(data) / "build_report.json"
    try:
        info = json.loads(marker.read_text())
        return {"path": str(data), "version": info["version"], "fingerprint": info["source_fingerprint"]}
    except (OSError, ValueError, KeyError):
        return {"path": str(data), "version": None, "fingerprint": None}


def load_splits(config: TrainConfig):
    """(train rows, validation rows, evaluation rows, evaluation split name)."""
    import datasets

    from fpus23_dataset import load

    if not config.progress:
        datasets.disable_progress_bars()
    if config.task == schema.PROBE.key:  # every frame has an Orientation row; its `probe` column is the target
        splits = load("orientation", protocol=config.protocol, path=config.data)
        splits = {name: split.filter(lambda probe: probe is not None, input_columns=["probe"]).remove_columns("label")
                  .rename_column("probe", "label") for name, split in splits.items()}
    else:
        splits = load(config.task, protocol=config.protocol, path=config.data)
    train = _subset(splits["train"], config.subset, config.seed)
    validation = splits.get("validation")
    evaluation_split = "test" if "test" in splits else "validation"
    evaluation = _subset(splits[evaluation_split], config.eval_subset, 0)  # the same frames whatever the training seed
    return train, validation, evaluation, evaluation_split


def make_loader(rows, spec: InputSpec, detector: bool, train: bool, batch_size: int, workers: int, seed: int,
                distributed: bool = False, flip: str = "random", balance: bool = False):
    """Under torchrun (`distributed`) each rank draws its own shard of the training rows, flipped
    copies and balancing repeats included (DistributedSampler over the dataset, not the rows)."""
    dataset = (DetectionDataset if detector else ClassificationDataset)(rows, spec, train, flip, balance, seed)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, seed=seed) if distributed else None
    generator = torch.Generator().manual_seed(seed)
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=train and sampler is None, sampler=sampler, num_workers=workers,
        collate_fn=collate_detection if detector else None, generator=generator, drop_last=False,
    )


def load_run(run_dir: Path | str) -> tuple[dict, torch.nn.Module, InputSpec]:
    run_dir = Path(run_dir)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise FileNotFoundError(f"{run_dir}: no run.json (not a finished training run)")
    run = json.loads(run_file.read_text())
    spec = InputSpec(**run["input"])
    model = build_model(run["task"], run["arch"], len(schema.task_classes(run["task"])), "scratch", (spec.height, spec.width),
                        **run.get("model_options", {}))
    model.load_state_dict(torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True))
    return run, model, spec


def evaluate_model(model, rows, spec: InputSpec, task: str, device: torch.device, *, batch_size: int, workers: int = 0,
                   seed: int = 0, amp: bool = False, progress: bool = False, confusion_png: Path | None = None,
                   title: str = "") -> tuple[dict, list[dict]]:
    """(metrics, per-frame predictions) of a model on rows; classifiers also plot their confusion matrix."""
    detector = task == "bounds"
    classes = schema.task_classes(task)
    loader = make_loader(rows, spec, detector, False, batch_size, workers, seed)
    if detector:
        from .coco_eval import coco_metrics

        truth, predictions = predict_boxes(model, loader, device, amp, progress)
        metrics = coco_metrics(truth, predictions, classes)
        return metrics, [{"image_id": image_id, **p, "truth": {"boxes": t["boxes"], "labels": t["labels"]}}
                         for image_id, p, t in zip(rows["image_id"], predictions, truth)]
    from .metrics import classification_metrics

    truth, predicted, scores = predict_classes(model, loader, device, amp, progress)
    metrics = classification_metrics(truth, predicted, classes)
    if confusion_png is not None:
        plot_confusion(metrics["confusion"], classes, confusion_png, title)
    return metrics, [{"image_id": i, "label": classes[p], "truth": classes[t], "scores": s}
                     for i, p, t, s in zip(rows["image_id"], predicted, truth, scores)]


def train(config: TrainConfig) -> dict:
    """Train, evaluate, write the run folder; returns the run summary (also run.json)."""
    config.resolve()
    world, rank, local_rank = _distributed()
    seed_everything(config.seed + rank)
    device = _device(config, local_rank)
    amp = config.amp and device.type == "cuda"
    detector = config.task == "bounds"
    classes = schema.task_classes(config.task)
    spec = InputSpec.at_scale(config.image_scale)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    recipe = config.recipe

    train_rows, validation_rows, evaluation_rows, evaluation_split = load_splits(config)
    train_loader = make_loader(train_rows, spec, detector, True, recipe["batch_size"], config.workers, config.seed, world > 1,
                               recipe["flip"], recipe["balance_planes"])
    sampler = train_loader.sampler if world > 1 else None
    model_options = {"proposals": config.proposals}
    if config.box_representation:
        model_options["box_representation"] = config.box_representation
    fpn = detector and recipe.get("fpn", False)
    if fpn:
        model_options["fpn"] = True
    if detector:
        model_options["anchor_sizes"], model_options["aspect_ratios"] = fitted_anchors(spec.height, 8 if fpn else 5)
    model = build_model(config.task, config.arch, len(classes), config.init, (spec.height, spec.width), **model_options)
    if config.trunk_from and detector:
        copied = load_trunk(model, torch.load(Path(config.trunk_from) / "model.pt", map_location="cpu", weights_only=True))
        config.init_note = f"trunk from {config.trunk_from} ({copied} tensors)"
    model = model.to(device)
    parameters = [p for p in model.parameters() if p.requires_grad]
    if recipe["optimizer"] == "adam":
        optimizer = torch.optim.Adam(parameters, lr=recipe["lr"], weight_decay=recipe["weight_decay"])
    else:
        optimizer = torch.optim.SGD(parameters, lr=recipe["lr"], momentum=recipe["momentum"], weight_decay=recipe["weight_decay"])
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=recipe["step_size"], gamma=recipe["gamma"])
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    network = torch.nn.parallel.DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None) if world > 1 else model

    checkpoint_path = out / "checkpoint.pt"
    start_epoch, history = 0, []
    if config.resume and checkpoint_path.is_file():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, history = state["epoch"] + 1, state["history"]
        torch.set_rng_state(state["rng"])

    started = time.perf_counter()
    for epoch in range(start_epoch, recipe["epochs"]):
        if sampler is not None:
            sampler.set_epoch(epoch)
        epoch_started = time.perf_counter()
        stats = train_one_epoch(network, train_loader, optimizer, device, detector=detector, scaler=scaler, amp=amp,
                                max_steps=config.max_steps, epoch=epoch, progress=config.progress and rank == 0,
                                desc=f"{config.task} {config.arch}")
        scheduler.step()
        stats["images"] *= world  # every rank trains on its own shard of the same size (DistributedSampler)
        stats.update(epoch=epoch, seconds=round(time.perf_counter() - epoch_started, 2),
                     images_per_s=round(stats["images"] / max(time.perf_counter() - epoch_started, 1e-9), 2),
                     lr=optimizer.param_groups[0]["lr"])
        history.append(stats)
        if rank == 0:
            torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "rng": torch.get_rng_state(),
                        "config": asdict(config)}, checkpoint_path)
    train_seconds = time.perf_counter() - started
    if rank != 0:
        torch.distributed.barrier()  # rank 0 evaluates and writes; the others return once run.json exists
        return {}

    title = f"{config.task} · {config.arch} · {config.protocol} protocol · {evaluation_split}"
    metrics, predictions_out = evaluate_model(model, evaluation_rows, spec, config.task, device, batch_size=recipe["batch_size"],
                                              workers=config.workers, seed=config.seed, amp=amp, progress=config.progress,
                                              confusion_png=out / "confusion.png", title=title)
    validation_metrics, thresholds = None, {}
    if validation_rows is not None and len(validation_rows):
        # One pass over the validation split: its metrics, and the score thresholds the CVAT plugin uses
        # by default (best F1 per class, see calibrate.py).
        loader = make_loader(_subset(validation_rows, config.eval_subset, config.seed), spec, detector, False,
                             recipe["batch_size"], config.workers, config.seed)
        if detector:
            truth, predicted = predict_boxes(model, loader, device, amp)
            validation_metrics, thresholds = coco_metrics(truth, predicted, classes), detector_thresholds(truth, predicted, classes)
        else:
            truth, predicted, scores = predict_classes(model, loader, device, amp)
            validation_metrics = classification_metrics(truth, predicted, classes)
            thresholds = classifier_thresholds(truth, scores, classes)
        if evaluation_split == "validation":
            validation_metrics = None  # the evaluation above is that split's already
    torch.save(model.state_dict(), out / "model.pt")
    summary = {
        "task": config.task, "arch": config.arch, "protocol": config.protocol, "recipe_set": config.recipe_set,
        "init": config.init, "init_note": config.init_note,
        "evaluation_split": evaluation_split, "metrics": metrics, "validation_metrics": validation_metrics,
        "thresholds": thresholds, "thresholds_chosen_on": "validation" if thresholds else None,
        "input": spec.to_dict(), "model_options": model_options,
        "dataset": dataset_identity(config.data), "recipe": recipe,
        "train_rows": len(train_rows), "evaluation_rows": len(evaluation_rows),
        "train_seconds": round(train_seconds, 1), "history": history, "device": str(device), "amp": amp, "world_size": world,
        "cost": cost_figures(model, spec.height, spec.width, detector, config.latency_runs),
        "config": asdict(config),
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    (out / "predictions.json").write_text(json.dumps(predictions_out) + "\n")
    (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    if world > 1:
        torch.distributed.barrier()
    return summary
