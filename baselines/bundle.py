"""Model bundles: a folder with `bundle.json` and weights; `load_bundle(path)` -> a ready predictor.

This is the only way the CVAT plugin and the FiftyOne integration reach a model.

    bundle.json              task, arch, class names (schema order), input size and normalisation,
                             dataset version and fingerprint, protocol, metrics
    model.pt                 state_dict (what load_bundle uses: exact, and checked)
    model.torchscript.pt     TorchScript, for serving without this package (when the model scripts)
    model.int8-qat.pt        INT8 bundles only (`compress --int8`): the QAT state; model.pt and the
                             TorchScript file are then the FP32 twin, and load_bundle serves INT8
"""
from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from fpus23_dataset import schema
from fpus23_dataset.atomic import OutputExistsError, replacing_dir

from .data import InputSpec, to_tensor
from .models import build_model, is_detector

BUNDLE_FORMAT = "fpus23-model-bundle"
BUNDLE_VERSION = 1
INT8_STATE = "model.int8-qat.pt"


class BundleError(ValueError):
    pass


def export_bundle(model: nn.Module, out: Path | str, *, task: str, arch: str, spec: InputSpec, dataset: dict,
                  protocol: str, metrics: dict, model_options: dict | None = None, extra: dict | None = None,
                  int8_state: Path | None = None) -> Path:
    """Write a bundle folder atomically; `int8_state` (a compressed run's QAT state) makes it an INT8 bundle."""
    out = Path(out)
    model = model.to("cpu").eval()
    try:
        with replacing_dir(out, "bundle.json") as temporary:
            torch.save(model.state_dict(), temporary / "model.pt")
            torchscript = _save_torchscript(model, temporary / "model.torchscript.pt", spec, is_detector(arch))
            if int8_state is not None:
                shutil.copyfile(int8_state, temporary / INT8_STATE)
            meta = {
                "format": BUNDLE_FORMAT,
                "format_version": BUNDLE_VERSION,
                "task": task,
                "arch": arch,
                "classes": list(schema.task_classes(task)),
                "input": spec.to_dict(),
                "model_options": model_options or {},
                "dataset": dataset,
                "protocol": protocol,
                "metrics": metrics,
                "weights": "model.pt",
                "torchscript": torchscript,
                "precision": "int8" if int8_state is not None else "fp32",
                "int8_state": INT8_STATE if int8_state is not None else None,
                **(extra or {}),
            }
            (temporary / "bundle.json").write_text(json.dumps(meta, indent=2) + "\n")
    except OutputExistsError as error:
        raise BundleError(f"{out}: exists and is not a model bundle; refusing to replace it") from error
    return out


def export_run(run_dir: Path | str, out: Path | str, *, fp32: bool = False, force: bool = False) -> Path:
    """The bundle of a finished run folder (train or compress); an INT8 run gives an INT8 bundle
    unless `fp32`. An existing `out` is replaced only with `force`."""
    from .train import load_run

    out = Path(out)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not force:
        raise BundleError(f"{out} exists; pass --force to replace it")
    run_dir = Path(run_dir)
    run, model, spec = load_run(run_dir)
    int8 = run.get("precision") == "int8" and not fp32
    extra = {"cost": run.get("cost"), "evaluation_split": run["evaluation_split"], "recipe": run["recipe"],
             "recipe_set": run.get("recipe_set"), "thresholds": run.get("thresholds", {}),
             "thresholds_chosen_on": run.get("thresholds_chosen_on")}
    if "compression" in run:
        c = run["compression"]
        extra["compression"] = {"prune": c["prune"], "sparsity": c["sparsity"], "dense_macs_g": c["dense_macs_g"],
                                "effective_macs_g": c["effective_macs_g"],
                                "fp32": {k: v for k, v in c["fp32"].items() if k != "metrics"},
                                "int8": c["int8"] and {k: v for k, v in c["int8"].items() if k != "metrics"}}
    metrics = run["metrics"] if int8 or "compression" not in run else run["compression"]["fp32"]["metrics"]
    return export_bundle(model, out, task=run["task"], arch=run["arch"], spec=spec, dataset=run["dataset"],
                         protocol=run["protocol"], metrics=metrics, model_options=run.get("model_options", {}),
                         extra=extra, int8_state=run_dir / INT8_STATE if int8 else None)


def _save_torchscript(model: nn.Module, path: Path, spec: InputSpec, detector: bool) -> str | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if detector:
                scripted = torch.jit.script(model)
            else:
                scripted = torch.jit.trace(model, torch.zeros(1, spec.channels, spec.height, spec.width))
        scripted.save(str(path))
        return path.name
    except Exception:  # noqa: BLE001 - TorchScript is a convenience; the state_dict is the bundle
        return None


@dataclass
class Predictor:
    """predict(list of PIL images) -> per image {"label", "score", "scores"} or {"boxes", "labels", "scores"}.

    Boxes are COCO [x, y, w, h] in the input image's pixels; labels are schema class names.
    """

    task: str
    arch: str
    classes: tuple[str, ...]
    spec: InputSpec
    model: nn.Module
    meta: dict
    device: torch.device
    batch_size: int = 16

    @property
    def detector(self) -> bool:
        return self.task == "bounds"

    @property
    def thresholds(self) -> dict[str, float]:
        """Per-class score thresholds chosen on the run's validation split ({} for older bundles)."""
        return dict(self.meta.get("thresholds") or {})

    @torch.inference_mode()
    def predict(self, images: Sequence) -> list[dict]:
        results: list[dict] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            results.extend(self._predict_detector(chunk) if self.detector else self._predict_classifier(chunk))
        return results

    def _predict_classifier(self, images: Sequence) -> list[dict]:
        batch = torch.stack([to_tensor(image, self.spec) for image in images]).to(self.device)
        probabilities = torch.softmax(self.model(batch).float(), dim=1).cpu()
        out = []
        for row in probabilities:
            index = int(row.argmax())
            out.append({"label": self.classes[index], "score": float(row[index]),
                        "scores": {name: float(p) for name, p in zip(self.classes, row)}})
        return out

    def _predict_detector(self, images: Sequence) -> list[dict]:
        tensors, scales = [], []
        for image in images:
            width, height = _size(image)
            tensors.append(to_tensor(image, self.spec, normalise=False).to(self.device))
            scales.append((self.spec.width / width, self.spec.height / height))
        outputs = self.model(tensors)
        out = []
        for output, (sx, sy) in zip(outputs, scales):
            boxes = output["boxes"].float().cpu()
            out.append({
                "boxes": [[x0 / sx, y0 / sy, (x1 - x0) / sx, (y1 - y0) / sy] for x0, y0, x1, y1 in boxes.tolist()],
                "labels": [self.classes[int(k) - 1] for k in output["labels"].cpu()],
                "scores": [float(s) for s in output["scores"].cpu()],
            })
        return out


def _size(image) -> tuple[int, int]:
    from .data import as_pil

    return as_pil(image).size


def load_bundle(path: Path | str, device: str | torch.device = "cpu") -> Predictor:
    """The predictor of a bundle folder; class names are checked against the schema."""
    path = Path(path)
    meta_path = path / "bundle.json"
    if not meta_path.is_file():
        raise BundleError(f"{path}: no bundle.json (not a model bundle)")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as error:
        raise BundleError(f"{meta_path}: not valid JSON ({error})") from None
    if meta.get("format") != BUNDLE_FORMAT or meta.get("format_version") != BUNDLE_VERSION:
        raise BundleError(f"{meta_path}: not an {BUNDLE_FORMAT} v{BUNDLE_VERSION} (format={meta.get('format')!r})")
    task, arch = meta["task"], meta["arch"]
    expected = list(schema.task_classes(task))
    if meta["classes"] != expected:
        raise BundleError(f"{meta_path}: classes {meta['classes']} differ from the schema's {task} classes {expected}")
    spec = InputSpec(**meta["input"])
    model = build_model(task, arch, len(expected), "scratch", (spec.height, spec.width), **meta.get("model_options", {}))
    model.load_state_dict(torch.load(path / meta.get("weights", "model.pt"), map_location="cpu", weights_only=True))
    device = torch.device(device)
    if meta.get("int8_state"):
        if device.type != "cpu":
            raise BundleError(f"{path}: an INT8 bundle runs on the CPU only (asked for {device})")
        from .quantize import load_int8

        state = torch.load(path / meta["int8_state"], map_location="cpu", weights_only=True)
        model = load_int8(model, is_detector(arch), spec.height, spec.width, state)
    return Predictor(task, arch, tuple(expected), spec, model.to(device).eval(), meta, device)
