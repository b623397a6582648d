"""Hugging Face features of each config, declared once, in the form `datasets` serialises them.

The builder derives the Arrow schema and the card's YAML from this declaration without importing
`datasets`: that import (pandas included) takes about a second, a quarter of a whole build of the 34
shared streams. `features_for` gives the `datasets.Features` object; tests check that the three views
agree field for field with what `datasets` itself derives.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from . import schema

if TYPE_CHECKING:
    from datasets import Features

_ARROW_VALUES = {"string": pa.string(), "int32": pa.int32(), "int64": pa.int64(), "float64": pa.float64()}
IMAGE_ARROW_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _value(dtype: str) -> dict:
    return {"dtype": dtype, "_type": "Value"}


def _class_label(names) -> dict:
    return {"names": list(names), "_type": "ClassLabel"}


def feature_dict(config: str) -> dict[str, Any]:
    """The declaration: `datasets.Features.to_dict()` form, one entry per column, in column order."""
    features: dict[str, Any] = {
        "image": {"_type": "Image"},
        "image_id": _value("string"),
        "stream": _value("string"),
        "frame": _value("int32"),
        "probe": _class_label(schema.PROBE.classes),
        "width": _value("int32"),
        "height": _value("int32"),
        "paper_split": _value("string"),
    }
    if config == "bounds":
        features["objects"] = {
            "feature": {
                "id": _value("int64"),
                "bbox": {"feature": _value("float64"), "length": 4, "_type": "List"},
                "category": _class_label(schema.BOX_CATEGORIES),
                "area": _value("float64"),
            },
            "_type": "List",
        }
    else:
        features["label"] = _class_label(schema.class_names(config))
    return features


def _arrow_type(spec: dict) -> pa.DataType:
    kind = spec.get("_type")
    if kind == "Image":
        return IMAGE_ARROW_TYPE
    if kind == "Value":
        return _ARROW_VALUES[spec["dtype"]]
    if kind == "ClassLabel":
        return pa.int64()
    if kind == "List":
        inner = _arrow_type(spec["feature"])
        return pa.list_(inner, spec["length"]) if "length" in spec else pa.list_(inner)
    if kind is None:  # a dict of sub-features: a struct
        return pa.struct([(name, _arrow_type(sub)) for name, sub in spec.items()])
    raise ValueError(f"feature type {kind!r} is not used by fpus23")


def arrow_schema(config: str) -> pa.Schema:
    """The Parquet schema of a config, with the `huggingface` metadata `datasets` reads back."""
    declared = feature_dict(config)
    metadata = {"huggingface": json.dumps({"info": {"features": declared}})}
    return pa.schema([(name, _arrow_type(spec)) for name, spec in declared.items()], metadata=metadata)


def _yaml_entry(name: str | None, spec: dict) -> dict:
    entry: dict[str, Any] = {} if name is None else {"name": name}
    kind = spec.get("_type")
    if kind == "Image":
        entry["dtype"] = "image"
    elif kind == "Value":
        entry["dtype"] = spec["dtype"]
    elif kind == "ClassLabel":
        entry["dtype"] = {"class_label": {"names": {str(i): n for i, n in enumerate(spec["names"])}}}
    elif kind == "List":
        inner = spec["feature"]
        if inner.get("_type") is None:
            entry["list"] = [_yaml_entry(sub_name, sub) for sub_name, sub in inner.items()]
        else:
            entry["list"] = _yaml_entry(None, inner)["dtype"]
        if "length" in spec:
            entry["length"] = spec["length"]
    else:
        raise ValueError(f"feature type {kind!r} is not used by fpus23")
    return entry


def yaml_features(config: str) -> list[dict]:
    """The `dataset_info.features` list of the card (what `Features._to_yaml_list()` writes)."""
    return [_yaml_entry(name, spec) for name, spec in feature_dict(config).items()]


def features_for(config: str) -> "Features":
    from datasets import Features

    return Features.from_dict(feature_dict(config))
