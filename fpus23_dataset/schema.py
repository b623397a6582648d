"""The FPUS23 label schema: the one place that knows CVAT label names, attributes and class orders.

Everything else (reader, renderer, builder, plugin, baselines, FiftyOne) imports from here.
Class orders are part of the published dataset: never reorder, only append.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

FRAME_WIDTH = 672
FRAME_HEIGHT = 389


@dataclass(frozen=True)
class TagTask:
    """A frame-level CVAT tag that becomes a classification label."""

    key: str  # our name: the config / field name
    cvat_label: str  # CVAT tag label
    cvat_attribute: str  # CVAT attribute holding the value
    classes: tuple[str, ...]  # our class order
    cvat_values: Mapping[str, str] = field(default_factory=dict)  # CVAT value -> our class

    def __post_init__(self) -> None:
        if not self.cvat_values:
            object.__setattr__(self, "cvat_values", MappingProxyType({c: c for c in self.classes}))
        else:
            object.__setattr__(self, "cvat_values", MappingProxyType(dict(self.cvat_values)))
        unknown = set(self.cvat_values.values()) - set(self.classes)
        if unknown:
            raise ValueError(f"{self.key}: CVAT values map to unknown classes {sorted(unknown)}")

    @property
    def cvat_value_of(self) -> dict[str, str]:
        """our class -> CVAT attribute value."""
        return {ours: cvat for cvat, ours in self.cvat_values.items()}


ORIENTATION = TagTask("orientation", "Orientation", "Pose", ("hdvb", "hdvf", "huvb", "huvf"))
ANATOMY = TagTask("anatomy", "location", "View_fetus", ("head", "arms", "legs", "abdomen"))
PLANE = TagTask(
    "plane",
    "diagnostic_plane",
    "plane",
    ("ac", "bpd", "fl", "no_plane"),
    {"Abd_plane": "ac", "Head_plane": "bpd", "Femur_plane": "fl"},
)
PROBE = TagTask("probe", "Probe", "orientation", ("h", "v"))

TAG_TASKS: tuple[TagTask, ...] = (ORIENTATION, ANATOMY, PLANE, PROBE)
TAG_TASK_BY_CVAT_LABEL: Mapping[str, TagTask] = MappingProxyType({t.cvat_label: t for t in TAG_TASKS})

# Plane folders of the FPUS23 archive: folder name -> plane class. NO_PLANE has no CVAT value.
PLANE_FOLDERS: Mapping[str, str] = MappingProxyType(
    {"AC_PLANE": "ac", "BPD_PLANE": "bpd", "FL_PLANE": "fl", "NO_PLANE": "no_plane"}
)
PLANE_FOLDER_OF: Mapping[str, str] = MappingProxyType({v: k for k, v in PLANE_FOLDERS.items()})

# Bounding boxes: our category order and the CVAT box label of each.
BOX_CATEGORIES: tuple[str, ...] = ("head", "arms", "legs", "abdomen")
BOX_CVAT_LABELS: Mapping[str, str] = MappingProxyType(
    {"head": "head", "arm": "arms", "legs": "legs", "abdomen": "abdomen"}
)  # CVAT box label -> category
BOX_CVAT_LABEL_OF: Mapping[str, str] = MappingProxyType({v: k for k, v in BOX_CVAT_LABELS.items()})

# Hugging Face configs and the class list each one's `label` (or object category) uses.
DETECTION_TASK = "bounds"
CLASSIFICATION_TASKS: Mapping[str, TagTask] = MappingProxyType(
    {"plane": PLANE, "orientation": ORIENTATION, "anatomy": ANATOMY}
)
CONFIGS: tuple[str, ...] = tuple(CLASSIFICATION_TASKS) + (DETECTION_TASK,)


# Model tasks, in the order the CVAT plugin runs and lists them: the detector, then a classifier per
# tag, Probe included (it is no config: its classifier learns any config's `probe` column).
TASKS: tuple[str, ...] = (DETECTION_TASK,) + tuple(t.key for t in TAG_TASKS)


def task_classes(task: str) -> tuple[str, ...]:
    return PROBE.classes if task == PROBE.key else class_names(task)


def configs_of(labels: Mapping[str, str], has_boxes: bool) -> list[str]:
    """The configs a frame has a row in: each tag config whose label it has, and bounds if it has a box."""
    configs = [config for config in CLASSIFICATION_TASKS if config in labels]
    if has_boxes:
        configs.append(DETECTION_TASK)
    return configs


def class_names(config: str) -> tuple[str, ...]:
    """Class order of a config: the label ClassLabel for classifiers, the category for bounds."""
    if config == DETECTION_TASK:
        return BOX_CATEGORIES
    try:
        return CLASSIFICATION_TASKS[config].classes
    except KeyError:
        raise ValueError(f"unknown config {config!r}; expected one of {', '.join(CONFIGS)}") from None


# Splits and the paper's per-frame protocol.
SPLITS: tuple[str, ...] = ("train", "validation", "test")
PAPER_RATIOS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "plane": MappingProxyType({"train": 0.8, "validation": 0.1, "test": 0.1}),
        "orientation": MappingProxyType({"train": 0.8, "validation": 0.1, "test": 0.1}),
        "anatomy": MappingProxyType({"train": 0.8, "validation": 0.1, "test": 0.1}),
        "bounds": MappingProxyType({"train": 0.8, "validation": 0.2}),
    }
)
STREAM_RATIOS: Mapping[str, float] = MappingProxyType({"train": 0.8, "validation": 0.1, "test": 0.1})


def cvat_labels_meta() -> list[dict]:
    """The `<labels>` of an FPUS23 CVAT task, in the order the real exports list them.

    Each entry: {"name", "type" ("tag"|"rectangle"), "attributes": [{"name", "values", "default"}]}.
    Used to write CVAT XML (renderer, pre-labelling) and to describe CVAT functions.
    """
    labels: list[dict] = []
    for task in (ORIENTATION,):
        labels.append(_tag_meta(task))
    labels.append({"name": BOX_CVAT_LABEL_OF["head"], "type": "rectangle", "attributes": []})
    labels.append({"name": BOX_CVAT_LABEL_OF["arms"], "type": "rectangle", "attributes": []})
    labels.append(_tag_meta(ANATOMY))
    labels.append(_tag_meta(PROBE))
    labels.append(_tag_meta(PLANE))
    labels.append({"name": BOX_CVAT_LABEL_OF["abdomen"], "type": "rectangle", "attributes": []})
    labels.append({"name": BOX_CVAT_LABEL_OF["legs"], "type": "rectangle", "attributes": []})
    return labels


def _tag_meta(task: TagTask) -> dict:
    values = list(task.cvat_values)
    return {
        "name": task.cvat_label,
        "type": "tag",
        "attributes": [{"name": task.cvat_attribute, "values": values, "default": values[0]}],
    }
