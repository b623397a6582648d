"""Hugging Face rows -> tensors. The only place that decodes images for training and evaluation."""
from __future__ import annotations

import io
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from fpus23_dataset import schema

# Grey-level statistics of phantom frames (sector included), used to normalise classifier inputs.
# Recorded in every bundle, so a model always sees the normalisation it was trained with.
PIXEL_MEAN = 0.22
PIXEL_STD = 0.22


@dataclass(frozen=True)
class InputSpec:
    """What a model takes: grey frames resized to height x width, normalised with mean/std."""

    height: int
    width: int
    mean: float = PIXEL_MEAN
    std: float = PIXEL_STD
    channels: int = 1

    @classmethod
    def at_scale(cls, scale: float) -> "InputSpec":
        return cls(max(32, round(schema.FRAME_HEIGHT * scale)), max(32, round(schema.FRAME_WIDTH * scale)))

    def to_dict(self) -> dict:
        return asdict(self)


def as_pil(image) -> Image.Image:
    """A PIL image from a decoded HF Image, raw {"bytes"} or bytes."""
    if isinstance(image, Image.Image):
        return image
    if isinstance(image, dict):
        image = image["bytes"]
    return Image.open(io.BytesIO(image))


def to_tensor(image, spec: InputSpec, normalise: bool = True) -> torch.Tensor:
    """Any-mode image -> float tensor [1, H, W]; resized to the spec; normalised for classifiers."""
    grey = as_pil(image).convert("L")
    if grey.size != (spec.width, spec.height):
        grey = grey.resize((spec.width, spec.height), Image.BILINEAR)
    tensor = torch.from_numpy(np.asarray(grey, dtype=np.float32) / 255.0)[None]
    return (tensor - spec.mean) / spec.std if normalise else tensor


FLIPS = ("random", "copies", "none")


def balanced_indices(labels: list[int], seed: int) -> list[int]:
    """Row indices with every class as frequent as the largest one: the smaller classes are
    repeated whole, then topped up by a seeded draw without replacement, so no row is over-used."""
    rng = np.random.default_rng(seed)
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(label, []).append(index)
    target = max(len(v) for v in by_class.values())
    out = []
    for members in by_class.values():
        repeats, rest = divmod(target, len(members))
        out += members * repeats + [int(i) for i in rng.choice(members, rest, replace=False)]
    return sorted(out)


class _FrameDataset(torch.utils.data.Dataset):
    """Rows of one split with images left encoded until __getitem__ (decoded once, in the worker).

    `flip` (training only): "random" mirrors each draw with probability 1/2 (ours); "copies" adds a
    mirrored copy of every row to the set, as the paper's §4.2 describes ("flipping the collected
    images along the y-axis ... and adding them to the original dataset before training"); "none".
    A probe held inverted mirrors the frame, not the fetus, so labels and boxes keep their meaning.
    `balance` repeats rows of the rarer classes (`balanced_indices`). The random flip draws from
    torch's global generator, which the DataLoader seeds per worker from its own seeded generator:
    runs are reproducible and workers do not repeat each other's flips.
    """

    def __init__(self, rows, spec: InputSpec, train: bool = False, flip: str = "random", balance: bool = False,
                 seed: int = 0):
        if flip not in FLIPS:
            raise ValueError(f"flip {flip!r}: expected one of {', '.join(FLIPS)}")
        self.rows = rows.cast_column("image", type(rows.features["image"])(decode=False))
        self.spec = spec
        self.flip = flip if train else "none"
        self.indices = balanced_indices(rows["label"], seed) if train and balance else list(range(len(rows)))

    def __len__(self) -> int:
        return len(self.indices) * (2 if self.flip == "copies" else 1)

    def _row(self, index: int) -> tuple[dict, bool]:
        """The row behind a dataset index, and whether to mirror it."""
        if self.flip == "copies":
            return self.rows[self.indices[index % len(self.indices)]], index >= len(self.indices)
        return self.rows[self.indices[index]], self.flip == "random" and torch.rand(1).item() < 0.5


class ClassificationDataset(_FrameDataset):
    """(image tensor, label index) over one split of a plane/orientation/anatomy config."""

    def __getitem__(self, index: int):
        row, mirrored = self._row(index)
        tensor = to_tensor(row["image"], self.spec)
        return (tensor.flip(-1) if mirrored else tensor), int(row["label"])


class DetectionDataset(_FrameDataset):
    """(image tensor in [0, 1], target dict for torchvision detection) over one split of bounds."""

    def __getitem__(self, index: int):
        row, mirrored = self._row(index)
        tensor = to_tensor(row["image"], self.spec, normalise=False)
        sx, sy = self.spec.width / row["width"], self.spec.height / row["height"]
        boxes = torch.tensor([[o["bbox"][0] * sx, o["bbox"][1] * sy, (o["bbox"][0] + o["bbox"][2]) * sx,
                               (o["bbox"][1] + o["bbox"][3]) * sy] for o in row["objects"]], dtype=torch.float32).reshape(-1, 4)
        labels = torch.tensor([o["category"] + 1 for o in row["objects"]], dtype=torch.int64)
        if mirrored:
            tensor = tensor.flip(-1)
            boxes = torch.stack([self.spec.width - boxes[:, 2], boxes[:, 1], self.spec.width - boxes[:, 0], boxes[:, 3]], 1)
        return tensor, {"boxes": boxes, "labels": labels, "image_id": self.indices[index % len(self.indices)], "scale": (sx, sy)}


def collate_detection(batch):
    return tuple(zip(*batch))
