"""Hugging Face features of each config, declared once."""
from __future__ import annotations

from datasets import ClassLabel, Features, Image, List, Value

from . import schema


def common_features() -> dict:
    return {
        "image": Image(),
        "image_id": Value("string"),
        "stream": Value("string"),
        "frame": Value("int32"),
        "probe": ClassLabel(names=list(schema.PROBE.classes)),
        "width": Value("int32"),
        "height": Value("int32"),
        "paper_split": Value("string"),
    }


def features_for(config: str) -> Features:
    features = common_features()
    if config == "bounds":
        features["objects"] = List(
            {
                "id": Value("int64"),
                "bbox": List(Value("float64"), length=4),
                "category": ClassLabel(names=list(schema.BOX_CATEGORIES)),
                "area": Value("float64"),
            }
        )
    else:
        features["label"] = ClassLabel(names=list(schema.class_names(config)))
    return Features(features)
