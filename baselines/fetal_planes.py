"""FETAL_PLANES_DB (Burgos-Artizzu et al., 2020), the real-world target of the paper's transfer study.

Layout of the public download (https://zenodo.org/records/3904280), which this reader expects:

    <root>/FETAL_PLANES_DB_data.csv    ';'-separated; header
                                       Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train
                                       (the last header field may carry a trailing space); Train is 1/0
    <root>/Images/<Image_name>.png

Only the paper's four classes are kept (`CLASSES`); rows of other planes, and rows whose image is
missing, are counted per reason. The official split is the `Train` column (patient-disjoint); a
validation set is carved out of the training patients, never out of their images.

`make_standin` writes a stand-in in exactly this layout with the project's phantom renderer, with
another "machine" look (gain, speckle, sector, image size), for tests and offline runs.
"""
from __future__ import annotations

import csv
import math
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from fpus23_dataset import schema

CSV_NAME = "FETAL_PLANES_DB_data.csv"
IMAGES_DIR = "Images"
# Typical box (w, h) of each anatomy at 672x389, for the stand-in's drawings.
ANATOMY_SIZE = {"head": (125, 110), "abdomen": (185, 125), "legs": (120, 62), "arms": (62, 95)}
COLUMNS = ("Image_name", "Patient_num", "Plane", "Brain_plane", "Operator", "US_Machine", "Train")
CLASSES = ("Fetal abdomen", "Fetal brain", "Fetal femur", "Fetal thorax")
# Table 5 (no fine-tuning): which FPUS23 plane stands for each FETAL_PLANES_DB class. The phantom
# has no thorax plane; a thorax section shows body without the AC/BPD/FL landmarks: NO_PLANE.
FPUS23_PLANE_OF = {"Fetal abdomen": "ac", "Fetal brain": "bpd", "Fetal femur": "fl", "Fetal thorax": "no_plane"}
assert set(FPUS23_PLANE_OF.values()) == set(schema.PLANE.classes)


class FetalPlanesError(ValueError):
    pass


@dataclass(frozen=True)
class Record:
    image: Path
    patient: int
    plane: str
    train: bool
    operator: str = ""
    machine: str = ""

    @property
    def label(self) -> int:
        return CLASSES.index(self.plane)


@dataclass
class FetalPlanes:
    root: Path
    records: list[Record]
    skipped: Counter = field(default_factory=Counter)

    def counts(self) -> dict:
        return {
            "kept": len(self.records),
            "per_class": {c: sum(r.plane == c for r in self.records) for c in CLASSES},
            "train": sum(r.train for r in self.records), "test": sum(not r.train for r in self.records),
            "patients": len({r.patient for r in self.records}),
            "skipped": dict(self.skipped),
        }


def read_fetal_planes(root: Path | str) -> FetalPlanes:
    """Parse the CSV (strictly) and keep the four classes whose image exists."""
    root = Path(root)
    path = root / CSV_NAME
    if not path.is_file():
        raise FetalPlanesError(f"{path}: not found (expected the FETAL_PLANES_DB download: {CSV_NAME} and {IMAGES_DIR}/)")
    records, skipped = [], Counter()
    with path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=";")
        header = [name.strip() for name in next(reader, [])]
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise FetalPlanesError(f"{path}: header lacks {', '.join(missing)} (found {';'.join(header)})")
        index = {c: header.index(c) for c in COLUMNS}
        for line, row in enumerate(reader, start=2):
            if not row or all(not cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise FetalPlanesError(f"{path}:{line}: {len(row)} fields, the header has {len(header)}")
            value = {c: row[i].strip() for c, i in index.items()}
            if value["Train"] not in ("0", "1"):
                raise FetalPlanesError(f"{path}:{line}: Train must be 1 or 0, got {value['Train']!r}")
            try:
                patient = int(value["Patient_num"])
            except ValueError:
                raise FetalPlanesError(f"{path}:{line}: Patient_num {value['Patient_num']!r} is not an integer") from None
            if value["Plane"] not in CLASSES:
                skipped[f"plane not studied: {value['Plane']}"] += 1
                continue
            image = root / IMAGES_DIR / f"{value['Image_name']}.png"
            if not image.is_file():
                skipped["image file missing"] += 1
                continue
            records.append(Record(image, patient, value["Plane"], value["Train"] == "1", value["Operator"], value["US_Machine"]))
    if not records:
        raise FetalPlanesError(f"{path}: no usable rows of {', '.join(CLASSES)} (skipped: {dict(skipped)})")
    return FetalPlanes(root, records, skipped)


def patient_split(db: FetalPlanes, validation_fraction: float = 0.2, seed: int = 0) -> dict[str, list[Record]]:
    """train / validation / test: test is Train=0; validation is whole training patients."""
    train_patients = {r.patient for r in db.records if r.train}
    test_patients = {r.patient for r in db.records if not r.train}
    shared = sorted(train_patients & test_patients)
    if shared:
        raise FetalPlanesError(f"{db.root / CSV_NAME}: patients {shared[:10]} are in both Train=1 and Train=0 rows; "
                               "the official split must be patient-disjoint")
    ordered = sorted(train_patients)
    random.Random(seed).shuffle(ordered)
    held = set(ordered[: max(1, round(len(ordered) * validation_fraction))] if validation_fraction > 0 and len(ordered) > 1 else [])
    return {
        "train": [r for r in db.records if r.train and r.patient not in held],
        "validation": [r for r in db.records if r.train and r.patient in held],
        "test": [r for r in db.records if not r.train],
    }


def stratified_subset(records: list[Record], fraction: float, seed: int = 0) -> list[Record]:
    """`fraction` of the images of each class (at least one each), for the paper's 40% experiment."""
    rng = random.Random(seed)
    out = []
    for plane in CLASSES:
        members = [r for r in records if r.plane == plane]
        if members:
            out += rng.sample(members, max(1, math.floor(len(members) * fraction)))
    return out


def standin_style():
    """Another ultrasound machine than the phantom's: wider sector, more speckle, harder gain curve."""
    from fpus23_dataset.synth import Style

    return Style(tissue=0.52, fluid=0.07, gain_falloff=1.25, speckle_sigma=0.34, outline=0.85, interior=0.42,
                 sector_half_angle=math.radians(38.0), gamma=1.35, name="fetal-planes-standin")


def make_standin(root: Path | str, patients: int = 12, images_per_class: int = 2, test_fraction: float = 0.34,
                 seed: int = 0, workers: int | None = None, progress: bool = True) -> Path:
    """Write a FETAL_PLANES_DB-shaped stand-in (CSV with the real header, trailing space included)."""
    from fpus23_dataset.synth import FrameSpec
    from fpus23_dataset.synth import RenderJob, render_jobs

    root = Path(root)
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    width, height = 806, 550  # another machine's frame size: the reader and models must resize
    anatomy_of = {"Fetal abdomen": "abdomen", "Fetal brain": "head", "Fetal femur": "legs", "Fetal thorax": "abdomen"}
    brain_plane = {"Fetal brain": "Trans-thalamic"}
    rng = random.Random(seed)
    test_count = max(1, round(patients * test_fraction))
    rows, jobs = [], []
    for patient in range(1, patients + 1):
        train = patient > test_count
        for plane in CLASSES + ("Maternal cervix",):
            count = images_per_class if plane in CLASSES else 1
            for k in range(count):
                name = f"Patient{patient:05d}_Plane{CLASSES.index(plane) + 1 if plane in CLASSES else 5}_{k + 1}_of_{count}"
                rows.append([name, str(patient), plane, brain_plane.get(plane, "Not A Brain"), f"Op. {1 + patient % 3}",
                             "Voluson E6" if patient % 2 else "Aloka", "1" if train else "0"])
                if plane not in CLASSES:
                    continue  # listed in the CSV, no image: the reader must skip it by class first
                anatomy = anatomy_of[plane]
                w, h = (s * width / schema.FRAME_WIDTH * rng.uniform(1.1, 1.4) for s in ANATOMY_SIZE[anatomy])
                cx, cy = width / 2 + rng.uniform(-60, 60), height * 0.55 + rng.uniform(-30, 30)
                spec = FrameSpec(stream=f"standin_{patient}", index=len(jobs), anatomy=anatomy,
                                 plane=FPUS23_PLANE_OF[plane], orientation="hdvb" if k % 2 else "huvf",
                                 boxes=((anatomy, cx - w / 2, cy - h / 2, w, h),), width=width, height=height)
                jobs.append(RenderJob(str(root / IMAGES_DIR / f"{name}.png"), spec))
    render_jobs(jobs, seed, standin_style(), workers, progress)
    with (root / CSV_NAME).open("w", newline="", encoding="utf-8") as handle:
        handle.write(";".join(COLUMNS) + " \n")  # the real file's header ends with a space
        csv.writer(handle, delimiter=";", lineterminator="\n").writerows(rows)
    return root
