"""One training epoch and one evaluation pass, for classifiers and detectors."""
from __future__ import annotations

import contextlib
import math
from typing import Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .coco_eval import coco_metrics
from .metrics import classification_metrics


def autocast(device: torch.device, enabled: bool):
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    device: torch.device,
    *,
    detector: bool,
    scaler: torch.amp.GradScaler | None = None,
    amp: bool = False,
    max_steps: int | None = None,
    epoch: int = 0,
    progress: bool = True,
    desc: str = "",
) -> dict:
    """Train for one pass (or `max_steps` batches); returns mean loss and the steps taken."""
    model.train()
    criterion = nn.CrossEntropyLoss()
    total, steps, seen = 0.0, 0, 0
    bar = tqdm(loader, desc=f"{desc} epoch {epoch}".strip(), unit="batch", disable=not progress, leave=False,
               total=min(len(loader), max_steps) if max_steps else len(loader))
    for images, targets in bar:
        if max_steps is not None and steps >= max_steps:
            break
        with autocast(device, amp):
            if detector:
                images = [image.to(device, non_blocking=True) for image in images]
                targets = [{"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets]
                losses = model(images, targets)
                loss = sum(losses.values())
            else:
                images, targets = images.to(device, non_blocking=True), targets.to(device, non_blocking=True)
                loss = criterion(model(images), targets)
        if not math.isfinite(loss.item()):
            raise FloatingPointError(f"loss is {loss.item()} at step {steps} of epoch {epoch}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None and scaler.is_enabled():
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        batch = len(images)
        total += loss.item() * batch
        seen += batch
        steps += 1
        bar.set_postfix(loss=f"{total / seen:.4f}")
    return {"loss": total / max(seen, 1), "steps": steps, "images": seen}


@torch.no_grad()
def predict_classes(model: nn.Module, loader: Iterable, device: torch.device, amp: bool = False, progress: bool = False):
    """(true labels, predicted labels, softmax scores) over a loader."""
    model.eval()
    truth, predicted, scores = [], [], []
    for images, labels in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        with autocast(device, amp):
            probabilities = torch.softmax(model(images.to(device)).float(), dim=1).cpu()
        truth.extend(int(v) for v in labels)
        predicted.extend(probabilities.argmax(1).tolist())
        scores.extend(probabilities.tolist())
    return truth, predicted, scores


def evaluate_classifier(model: nn.Module, loader: Iterable, device: torch.device, classes: Sequence[str], amp: bool = False,
                        progress: bool = False) -> dict:
    truth, predicted, _ = predict_classes(model, loader, device, amp, progress)
    return classification_metrics(truth, predicted, classes)


@torch.no_grad()
def predict_boxes(model: nn.Module, loader: Iterable, device: torch.device, amp: bool = False, progress: bool = False):
    """Ground truth and predictions per image in original pixels, COCO [x, y, w, h], 0-based labels."""
    model.eval()
    ground_truth, predictions = [], []
    for images, targets in tqdm(loader, desc="evaluate", unit="batch", disable=not progress, leave=False):
        with autocast(device, amp):
            outputs = model([image.to(device) for image in images])
        for image, target, output in zip(images, targets, outputs):
            sx, sy = target["scale"]
            ground_truth.append({
                "boxes": _to_xywh(target["boxes"], sx, sy), "labels": (target["labels"] - 1).tolist(),
                "width": round(image.shape[-1] / sx), "height": round(image.shape[-2] / sy),
            })
            predictions.append({
                "boxes": _to_xywh(output["boxes"].float().cpu(), sx, sy), "labels": (output["labels"].cpu() - 1).tolist(),
                "scores": output["scores"].float().cpu().tolist(),
            })
    return ground_truth, predictions


def _to_xywh(boxes: torch.Tensor, sx: float, sy: float) -> list[list[float]]:
    boxes = boxes.reshape(-1, 4)
    return [[float(x0 / sx), float(y0 / sy), float((x1 - x0) / sx), float((y1 - y0) / sy)] for x0, y0, x1, y1 in boxes.tolist()]


def evaluate_detector(model: nn.Module, loader: Iterable, device: torch.device, classes: Sequence[str], amp: bool = False,
                      progress: bool = False) -> dict:
    ground_truth, predictions = predict_boxes(model, loader, device, amp, progress)
    return coco_metrics(ground_truth, predictions, classes)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, device: torch.device, *, detector: bool,
                          max_batches: int | None = 50, progress: bool = False) -> int:
    """Re-estimate every BatchNorm's running statistics on training batches (no weight changes).

    After pruning, activations shift; a short retraining moves the weights but leaves the running
    statistics (momentum 0.1) partly those of the dense network, and eval-mode accuracy collapses.
    Statistics are reset and averaged over `max_batches` batches (cumulative average). Returns the
    batches used.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None
    model.eval()
    for norm in norms:
        norm.train()
    used = 0
    for images, _ in tqdm(loader, desc="batch-norm statistics", unit="batch", disable=not progress, leave=False,
                          total=min(len(loader), max_batches) if max_batches else len(loader)):
        if max_batches is not None and used >= max_batches:
            break
        if detector:
            batch, _ = model.transform([image.to(device) for image in images])
            model.backbone(batch.tensors)
        else:
            model(images.to(device))
        used += 1
    for norm, momentum in zip(norms, momenta):
        norm.momentum = momentum
    model.train(was_training)
    return used
