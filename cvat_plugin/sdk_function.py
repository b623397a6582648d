"""cvat-sdk auto-annotation function: the FPUS23 pre-labeller without nuclio.

    cvat-cli --server-host URL --auth USER task auto-annotate TASK_ID \\
        --function-file cvat_plugin/sdk_function.py -p models=str:/path/to/bundles [-p threshold=float:0.5] \\
        --allow-unmatched-labels

Without a threshold (here or cvat-cli's --conf-threshold), each bundle's calibrated per-class thresholds.
`--allow-unmatched-labels` (annotate_task's allow_unmatched_labels=True) is needed for the FPUS23 `longrec`
tasks: they have no `legs`, `abdomen` or `diagnostic_plane` labels, and the driver maps the function's `spec`
onto the task's labels before the first frame, refusing any spec label the task lacks. A function cannot
see the task it runs on (cvat-cli builds it from -p parameters alone), so the flag, which only drops
predictions for labels the task lacks, is what makes one command work on every FPUS23 task.
cvat-sdk/cvat-cli >= 2.44.0: proven by tests/test_cvat_plugin.py through that version's driver
(benchmarks/check_cvat_sdk_versions.sh, benchmarks/results/cvat_sdk_versions.md).

A `spec` and a `detect()`; labels, attribute names and values are the FPUS23 CVAT task's.
"""
from __future__ import annotations

import cvat_sdk.auto_annotation as cvataa
import cvat_sdk.models as models
import PIL.Image

from cvat_plugin.functions import PRELABEL, Function, load_functions


def spec_from_labels(labels: list[dict]) -> cvataa.DetectionFunctionSpec:
    return cvataa.DetectionFunctionSpec(labels=[
        cvataa.label_spec(label["name"], label["id"], type=label["type"], attributes=[
            cvataa.select_attribute_spec(attribute["name"], k, attribute["values"])
            for k, attribute in enumerate(label["attributes"])
        ])
        for label in labels
    ])


class Fpus23Prelabel:
    def __init__(self, function: Function, threshold: float | None = None):
        self.function = function
        self.threshold = threshold
        self.spec = spec_from_labels(function.labels)
        self._label_ids = {label["name"]: label["id"] for label in function.labels}

    def detect(self, context: cvataa.DetectionFunctionContext, image: PIL.Image.Image) -> list:
        threshold = getattr(context, "conf_threshold", None)
        out = []
        for item in self.function(image, self.threshold if threshold is None else threshold):
            label_id = self._label_ids[item["label"]]
            if item["type"] == "rectangle":
                out.append(cvataa.rectangle(label_id, item["points"]))
            else:  # each tag has one select attribute, id 0
                out.append(cvataa.tag(label_id, attributes=[
                    models.AttributeValRequest(spec_id=0, value=item["attributes"][0]["value"])]))
        return out


def create(models: str, threshold: float | None = None, device: str = "cpu") -> Fpus23Prelabel:
    """Called by cvat-cli with the -p parameters."""
    return Fpus23Prelabel(load_functions(models, device=device)[PRELABEL], threshold)
