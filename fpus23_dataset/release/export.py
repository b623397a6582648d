"""Exports of a built dataset to other tools' formats."""
from __future__ import annotations

import json
from pathlib import Path

from tqdm.auto import tqdm

from .. import schema
from ..atomic import check_replaceable, replacing_dir
from ..errors import UserError
from .tables import config_rows, iter_batches, shard_files

FORMATS = ("coco",)


def export_coco(path: Path | str, out: Path | str, config: str = "bounds", progress: bool = True) -> dict[str, Path]:
    """COCO detection JSON per split (`annotations/instances_<split>.json`) and the PNGs as they are
    (`images/<split>/<stream>/<frame>.png`). Category ids start at 1 in schema order. Atomic."""
    if config != schema.DETECTION_TASK:
        raise UserError(f"COCO export is for the {schema.DETECTION_TASK} config, not {config!r}: use --config {schema.DETECTION_TASK}")
    written = {}
    check_replaceable(out)
    files_of = shard_files(path, config)
    with replacing_dir(out) as temporary:
        categories = [{"id": i + 1, "name": name, "supercategory": "fetus"} for i, name in enumerate(schema.BOX_CATEGORIES)]
        columns = ["image", "image_id", "stream", "frame", "width", "height", "objects"]
        for split, files in files_of.items():
            images, annotations = [], []
            with tqdm(total=config_rows(files), desc=f"export {split}", unit="frame", disable=not progress) as bar:
                for batch in iter_batches(files, columns):
                    for record in batch.to_pylist():
                        image_id = len(images) + 1
                        relative = f"{split}/{record['image_id']}{Path(record['image']['path'] or '.png').suffix or '.png'}"
                        target = temporary / "images" / relative
                        target.parent.mkdir(parents=True, exist_ok=True)
                        target.write_bytes(record["image"]["bytes"])
                        images.append({
                            "id": image_id, "file_name": relative, "width": record["width"], "height": record["height"],
                            "fpus23_image_id": record["image_id"], "stream": record["stream"], "frame": record["frame"],
                        })
                        for obj in record["objects"]:
                            annotations.append({
                                "id": obj["id"], "image_id": image_id, "category_id": obj["category"] + 1,
                                "bbox": [float(v) for v in obj["bbox"]], "area": float(obj["area"]), "iscrowd": 0,
                            })
                        bar.update(1)
            document = {
                "info": {"description": "FPUS23 bounds", "version": _version(path)},
                "licenses": [{"id": 1, "name": "MIT"}],
                "images": images, "annotations": annotations, "categories": categories,
            }
            json_path = temporary / "annotations" / f"instances_{split}.json"
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps(document), encoding="utf-8")
            written[split] = Path(out).absolute() / "annotations" / f"instances_{split}.json"
    return written


def _version(path: Path | str) -> str:
    marker = Path(path) / "build_report.json"
    try:
        return json.loads(marker.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return ""
