"""FETAL_PLANES_DB reader, patient-disjoint split, stand-in and the transfer experiments at tiny scale."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="baselines need the [baselines] extra (torch, torchvision)")

from baselines.cli import main as baselines_main  # noqa: E402
from baselines.fetal_planes import (  # noqa: E402
    CLASSES, CSV_NAME, FPUS23_PLANE_OF, FetalPlanesError, make_standin, patient_split, read_fetal_planes,
    stratified_subset,
)
from fpus23_dataset import schema  # noqa: E402

REAL_HEADER = "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine;Train \n"


def _db(tmp_path, rows: list[str], header: str = REAL_HEADER, images: bool = True):
    (tmp_path / "Images").mkdir(parents=True, exist_ok=True)
    (tmp_path / CSV_NAME).write_text(header + "".join(r + "\n" for r in rows), encoding="utf-8")
    if images:
        for row in rows:
            (tmp_path / "Images" / f"{row.split(';')[0]}.png").write_bytes(b"\x89PNG")
    return tmp_path


def test_reader_parses_the_real_header_with_its_trailing_space(tmp_path):
    root = _db(tmp_path, [
        "Patient00001_Plane1_1_of_15;1;Fetal abdomen;Not A Brain;Op. 1;Voluson E6;1",
        "Patient00001_Plane3_1_of_15;1;Fetal brain;Trans-thalamic;Op. 1;Voluson E6;1",
        "Patient00002_Plane5_1_of_3;2;Maternal cervix;Not A Brain;Op. 2;Aloka;0",
        "Patient00002_Plane6_1_of_3;2;Other;Not A Brain;Op. 2;Aloka;0",
        "Patient00003_Plane4_1_of_2;3;Fetal thorax;Not A Brain;Other;Voluson S10;0",
    ])
    (root / "Images" / "Patient00003_Plane4_1_of_2.png").unlink()
    db = read_fetal_planes(root)
    assert [(r.patient, r.plane, r.train, r.machine) for r in db.records] == [
        (1, "Fetal abdomen", True, "Voluson E6"), (1, "Fetal brain", True, "Voluson E6")]
    assert db.records[0].label == CLASSES.index("Fetal abdomen")
    assert db.skipped == {"plane not studied: Maternal cervix": 1, "plane not studied: Other": 1, "image file missing": 1}


@pytest.mark.parametrize("rows, header, message", [
    (["a;1;Fetal brain;x;y;z;yes"], REAL_HEADER, r":2: Train must be 1 or 0, got 'yes'"),
    (["a;one;Fetal brain;x;y;z;1"], REAL_HEADER, r":2: Patient_num 'one' is not an integer"),
    (["a;1;Fetal brain"], REAL_HEADER, r":2: 3 fields, the header has 7"),
    (["a;1;Fetal brain;x;y;z;1"], "Image_name;Patient_num;Plane;Brain_plane;Operator;US_Machine\n", r"header lacks Train"),
])
def test_reader_names_the_file_line_and_problem(tmp_path, rows, header, message):
    root = _db(tmp_path, rows, header)
    with pytest.raises(FetalPlanesError, match=message) as error:
        read_fetal_planes(root)
    assert CSV_NAME in str(error.value)


def test_missing_database_says_what_it_expects(tmp_path):
    with pytest.raises(FetalPlanesError, match="not found.*Images/"):
        read_fetal_planes(tmp_path)


def test_split_is_patient_disjoint_and_refuses_shared_patients(tmp_path):
    rows = [f"P{p}_{k};{p};{CLASSES[k % 4]};x;y;z;{1 if p <= 6 else 0}" for p in range(1, 10) for k in range(4)]
    db = read_fetal_planes(_db(tmp_path / "ok", rows))
    splits = patient_split(db, validation_fraction=0.34, seed=1)
    patients = {name: {r.patient for r in records} for name, records in splits.items()}
    assert patients["test"] == {7, 8, 9} and len(patients["validation"]) == 2
    assert not (patients["train"] & patients["validation"]) and not (patients["train"] | patients["validation"]) & patients["test"]
    assert sum(map(len, splits.values())) == len(db.records)
    subset = stratified_subset(splits["train"], 0.4)
    assert {r.plane for r in subset} == set(CLASSES) and len(subset) < len(splits["train"])

    shared = read_fetal_planes(_db(tmp_path / "shared", rows + ["Q;1;Fetal femur;x;y;z;0"]))
    with pytest.raises(FetalPlanesError, match=r"patients \[1\] are in both"):
        patient_split(shared)


def test_class_mapping_covers_the_fpus23_planes_once():
    assert sorted(FPUS23_PLANE_OF.values()) == sorted(schema.PLANE.classes)


@pytest.fixture(scope="module")
def standin(tmp_path_factory):
    return make_standin(tmp_path_factory.mktemp("fetal-planes") / "FETAL_PLANES_DB", patients=5, images_per_class=2,
                        seed=2, workers=2, progress=False)


def test_standin_has_the_real_layout(standin):
    header = (standin / CSV_NAME).read_text().splitlines()[0]
    assert header == REAL_HEADER.rstrip("\n")  # trailing space included
    db = read_fetal_planes(standin)
    counts = db.counts()
    assert counts["per_class"] == {c: 10 for c in CLASSES} and counts["patients"] == 5
    assert counts["skipped"] == {"plane not studied: Maternal cervix": 5}
    from PIL import Image

    with Image.open(db.records[0].image) as image:
        assert image.size != (schema.FRAME_WIDTH, schema.FRAME_HEIGHT)  # another machine


def test_transfer_experiments_run_end_to_end(standin, quick_runs, tmp_path):
    from baselines import paper
    from baselines.transfer import TransferConfig

    assert TransferConfig(db="", fpus23_run="").lr == 1e-3  # section 4.1: Adam, 0.001 for all models
    out = tmp_path / "transfer"
    assert baselines_main(["transfer", "--db", str(standin), "--fpus23-run", str(quick_runs / "plane"), "--out", str(out),
                           "--epochs", "2", "--target", "0.5", "--batch-size", "8", "--quiet"]) == 0
    results = json.loads((out / "transfer.json").read_text())
    assert results["config"]["lr"] == 1e-3
    test_images = results["database"]["split"]["test"]
    table5 = results["no_finetuning"]["metrics"]
    assert sum(map(sum, table5["confusion"])) == test_images and table5["classes"] == list(CLASSES)
    # the quick plane run is a ResNet10: ImageNet weights exist for ResNet34 only
    assert "ResNet34 only" in results["no_finetuning_imagenet"]["skipped"]
    for tag in ("full", "subset40"):
        fpus23, scratch = results[tag]["fpus23"], results[tag]["scratch"]
        assert "ResNet34 only" in results[tag]["imagenet"]["skipped"]
        for r in (fpus23, scratch):
            assert [c["epoch"] for c in r["curve"]] == [1, 2]
            assert r["weight_change"]["sum_sq"] > 0 and r["weight_change"]["weights"] > 0
            assert sum(map(sum, r["final"]["confusion"])) == test_images
            # reported accuracy = the confusion matrix's diagonal share, every epoch
            for c in r["curve"]:
                assert c["accuracy"] == pytest.approx(sum(c["confusion"][k][k] for k in range(4)) / test_images)
            # epochs to target = the first epoch whose test accuracy reaches it, recomputed from the curve
            assert r["epochs_to_target"] == next((c["epoch"] for c in r["curve"] if c["accuracy"] >= 0.5), None)
            # the validation patients choose the reported epoch (earliest best), and its test accuracy is reported
            assert r["validation_images"] == results["database"]["split"]["validation"] > 0
            best = max(c["validation_accuracy"] for c in r["curve"])
            chosen = next(c for c in r["curve"] if c["validation_accuracy"] == best)
            assert r["selected"]["epoch"] == chosen["epoch"] and r["selected"]["chosen_by"] == "best validation accuracy"
            assert r["selected"]["test"]["accuracy"] == chosen["accuracy"]
            assert (out / f"{tag}_{r['init']}_final.png").is_file()
    assert results["subset40"]["fpus23"]["train_images"] < results["full"]["fpus23"]["train_images"]
    table = (out / "transfer.md").read_text()
    assert "Table 5" in table and "Fetal thorax = NO_PLANE" in table and "skipped: ImageNet" in table
    # Table 5: the paper's figures from paper.py beside ours; ours recomputed from the confusion matrix
    errors = test_images - sum(table5["confusion"][k][k] for k in range(4))
    paper_row = " | ".join(paper.paper_value(5, "resnet34", "plane", "errors", init=i) for i in ("imagenet", "fpus23"))
    assert f"| {errors} | {paper_row} |" in table
    # Tables 6-7 in the paper's layout (rows = prediction), ours beside: FPUS23 init after the paper's 1 epoch
    assert paper.confusion_markdown(7) in table and paper.confusion_markdown(6) in table
    ours = [list(col) for col in zip(*results["full"]["fpus23"]["curve"][0]["confusion"])]
    assert paper.confusion_markdown(7, ours, title="Ours, fpus23 init, after 1 epoch (the paper's epoch)") in table


def test_finetuning_from_the_standin_beats_chance(standin, quick_runs, tmp_path):
    """Fine-tuning learns: from the FPUS23 plane run, 2 epochs on the stand-in's training patients
    score above chance (25 %) on its held-out test patients (before batch-norm recalibration,
    eval-mode predictions collapsed to one class: exactly 25 %)."""
    from baselines.transfer import TransferConfig, run_transfer

    results = run_transfer(TransferConfig(db=str(standin), fpus23_run=str(quick_runs / "plane"), out=str(tmp_path / "t"),
                                          inits=("fpus23",), epochs=2, subset=None, batch_size=8, validation_fraction=0,
                                          progress=False))
    r = results["full"]["fpus23"]
    assert r["selected"]["epoch"] == 2 and r["selected"]["chosen_by"].startswith("last epoch")
    assert r["final"]["accuracy"] > 0.25 + 0.1, r["curve"]


def test_table5_imagenet_row_skipped_or_measured(standin, tmp_path, monkeypatch):
    """Without the weights the ImageNet row says how to provide them; with them it is measured."""
    from torchvision.models import resnet34

    from baselines import models
    from baselines.data import InputSpec
    from baselines.transfer import TransferConfig, no_finetuning_imagenet

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    records = patient_split(read_fetal_planes(standin))["test"]
    spec, config = InputSpec.at_scale(0.15), TransferConfig(db="", fpus23_run="", batch_size=8)
    missing = no_finetuning_imagenet("resnet34", records, spec, config)
    assert missing["skipped"].startswith("weights not provided (") and str(models.imagenet_weights_path()) in missing["skipped"]
    models.imagenet_weights_path().parent.mkdir(parents=True)
    torch.save(resnet34().state_dict(), models.imagenet_weights_path())  # stands in for the real file
    metrics = no_finetuning_imagenet("resnet34", records, spec, config)["metrics"]
    assert metrics["samples"] == len(records)
    assert metrics["accuracy"] == pytest.approx(sum(metrics["confusion"][k][k] for k in range(4)) / len(records))
