"""Model bundles -> CVAT detector functions in the exact FPUS23 label schema.

A function turns one image into CVAT's detector output: rectangles
`{"label", "type": "rectangle", "points": [xtl, ytl, xbr, ybr], "confidence", "attributes": []}` and
tags `{"label", "type": "tag", "attributes": [{"name", "value"}]}`. Labels, attributes and values
come from `fpus23_dataset.schema`; models come only through `load_bundle`.

Functions: `fpus23-prelabel` (boxes + Orientation + location + diagnostic_plane tags in one call)
and one per bundle, `fpus23-<bundle folder name>`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from PIL import Image

from fpus23_dataset import schema

LOG = logging.getLogger("fpus23.cvat")
PRELABEL = "fpus23-prelabel"
TAG_TASK_OF = {task.key: task for task in schema.TAG_TASKS}
DEFAULT_THRESHOLD = 0.5


def tag_label_spec(task: schema.TagTask) -> dict:
    """A CVAT label spec for a tag with its one select attribute (CVAT values only)."""
    return {"name": task.cvat_label, "type": "tag",
            "attributes": [{"name": task.cvat_attribute, "input_type": "select", "values": list(task.cvat_values)}]}


def box_label_specs() -> list[dict]:
    return [{"name": schema.BOX_CVAT_LABEL_OF[c], "type": "rectangle", "attributes": []} for c in schema.BOX_CATEGORIES]


def label_specs_for(tasks: list[str]) -> list[dict]:
    """CVAT's function `spec`: labels with ids, in a stable order."""
    specs: list[dict] = []
    for task in tasks:
        specs.extend(box_label_specs() if task == "bounds" else [tag_label_spec(TAG_TASK_OF[task])])
    return [{"id": k, **spec} for k, spec in enumerate(specs)]


def to_cvat(task: str, prediction: dict, threshold: float | Mapping[str, float]) -> list[dict]:
    """One predictor output -> CVAT detector items; outputs scoring below the threshold (one number,
    or one per class name: a bundle's calibrated thresholds) are left out."""
    def limit(name: str) -> float:
        return threshold.get(name, DEFAULT_THRESHOLD) if isinstance(threshold, Mapping) else threshold

    if task == "bounds":
        out = []
        for (x, y, w, h), label, score in zip(prediction["boxes"], prediction["labels"], prediction["scores"]):
            if score < limit(label):
                continue
            out.append({"label": schema.BOX_CVAT_LABEL_OF[label], "type": "rectangle",
                        "points": [round(x, 2), round(y, 2), round(x + w, 2), round(y + h, 2)],
                        "confidence": f"{score:.4f}", "attributes": []})
        return out
    tag = TAG_TASK_OF[task]
    value = tag.cvat_value_of.get(prediction["label"])  # no_plane has no CVAT value: no tag
    if value is None or prediction["score"] < limit(prediction["label"]):
        return []
    return [{"label": tag.cvat_label, "type": "tag", "confidence": f"{prediction['score']:.4f}",
             "attributes": [{"name": tag.cvat_attribute, "value": value}]}]


@dataclass
class Function:
    """One CVAT function: its name, description, label spec and a callable over PIL images."""

    name: str
    description: str
    tasks: list[str]
    run: Callable[[list[Image.Image], float | None], list[list[dict]]]  # None: each bundle's calibrated thresholds
    labels: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = label_specs_for(self.tasks)

    def __call__(self, image: Image.Image, threshold: float | None = None) -> list[dict]:
        return self.run([image], threshold)[0]


def discover_bundles(models_dir: Path | str) -> dict[str, Path]:
    """bundle folder name -> path, for every `<dir>/<name>/bundle.json`."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise FileNotFoundError(f"{models_dir}: models folder not found")
    found = {p.parent.name: p.parent for p in sorted(models_dir.glob("*/bundle.json"))}
    if not found:
        raise FileNotFoundError(f"{models_dir}: no model bundles (<name>/bundle.json); see `fpus23-baselines export`")
    return found


def load_functions(models_dir: Path | str, device: str = "cpu") -> dict[str, Function]:
    """Load every bundle of a folder; build one function per bundle and the combined pre-labeller."""
    from baselines.bundle import load_bundle

    predictors = {}
    for name, path in discover_bundles(models_dir).items():
        predictors[name] = load_bundle(path, device=device)
        LOG.info("loaded bundle %s (%s, %s)", name, predictors[name].task, predictors[name].arch)
    functions: dict[str, Function] = {}
    for name, predictor in predictors.items():
        def run(images, threshold, predictor=predictor):
            limits = predictor.thresholds if threshold is None else threshold
            return [to_cvat(predictor.task, p, limits) for p in predictor.predict(images)]

        functions[f"fpus23-{name}"] = Function(
            f"fpus23-{name}", f"FPUS23 {predictor.task} ({predictor.arch}, trained on dataset "
            f"{predictor.meta.get('dataset', {}).get('version')}, {predictor.meta.get('protocol')} protocol)",
            [predictor.task], run,
        )
    # The pre-labeller: one bundle per task, the first by name when several serve the same task.
    by_task: dict[str, object] = {}
    for name in sorted(predictors):
        by_task.setdefault(predictors[name].task, predictors[name])
    order = [t for t in schema.TASKS if t in by_task]

    def prelabel(images, threshold):
        results = [[] for _ in images]
        for task in order:
            limits = by_task[task].thresholds if threshold is None else threshold
            for k, prediction in enumerate(by_task[task].predict(images)):
                results[k].extend(to_cvat(task, prediction, limits))
        return results

    functions[PRELABEL] = Function(
        PRELABEL, "FPUS23 pre-labelling: anatomy boxes and Orientation, Probe, location and diagnostic_plane tags "
        f"in one call (models: {', '.join(f'{t}={by_task[t].arch}' for t in order)})", order, prelabel,
    )
    return functions


def nuclio_function_json(function: Function, port: int, state: str = "ready") -> dict:
    """The function as the nuclio dashboard describes it (what CVAT's lambda manager parses)."""
    import json

    return {
        "metadata": {
            "name": function.name,
            "namespace": "nuclio",
            "annotations": {
                "name": function.name,
                "type": "detector",
                "framework": "pytorch",
                "spec": json.dumps(function.labels),
            },
            "labels": {"nuclio.io/project-name": "cvat"},
        },
        "spec": {"description": function.description, "handler": "cvat_plugin.server", "runtime": "python"},
        "status": {"state": state, "httpPort": port},
    }
