from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch", reason="baselines need the [baselines] extra (torch, torchvision)")

from PIL import Image  # noqa: E402

from baselines import models  # noqa: E402
from baselines.bundle import BundleError, load_bundle  # noqa: E402
from baselines.cli import main as baselines_main  # noqa: E402
from baselines.coco_eval import coco_metrics  # noqa: E402
from baselines.metrics import classification_metrics  # noqa: E402
from baselines import paper  # noqa: E402
from baselines.cost import PAPER_MACS_LABEL  # noqa: E402
from baselines.report import load_runs, table1  # noqa: E402
from fpus23_dataset import schema  # noqa: E402


@pytest.mark.parametrize("arch", models.CLASSIFIER_ARCHS)
def test_every_classifier_builds_and_takes_a_training_step(arch):
    torch.manual_seed(0)
    model = models.build_classifier(arch, 4)
    x, y = torch.randn(2, 1, 97, 168), torch.tensor([0, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in model.parameters()]
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert model(x).shape == (2, 4)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_small_resnets_have_the_papers_shape():
    r8, r10 = models.build_classifier("resnet8", 4), models.build_classifier("resnet10", 4)
    assert [stage[0].conv1.out_channels for stage in r8.layers] == [64, 128, 256]
    assert [stage[0].conv1.out_channels for stage in r10.layers] == [64, 128, 256, 512]
    assert r8.fc.in_features == 256 and r10.fc.in_features == 512
    r34 = models.build_classifier("resnet34", 4)
    assert r34.conv1.in_channels == 1 and r34.fc.out_features == 4


def test_anchors_scale_with_the_input_and_cover_the_annotated_boxes(shared_annotations):
    """The anchors span the real boxes (5th..95th percentile of sqrt(w h), recomputed here from the
    annotations themselves, not from the committed table) at whatever input height is used."""
    import numpy as np

    from fpus23_dataset.cvat import discover, read_stream
    from fpus23_dataset.report import Report

    source = discover(shared_annotations)
    sides = [(b.w * b.h) ** 0.5 for name in sorted(source.streams)[::4]
             for f in read_stream(name, source.streams[name].xml_files, Report()) for b in f.boxes]
    low, high = np.percentile(sides, [5, 95])
    for height in (389, 195, 136):
        sizes, ratios = models.fitted_anchors(height)
        scale = height / 389
        assert sizes == tuple(sorted(set(sizes)))
        assert abs(sizes[0] - low * scale) <= 0.15 * low * scale + 1 and abs(sizes[-1] - high * scale) <= 0.15 * high * scale + 1
        assert ratios[0] < 0.6 and ratios[-1] > 1.6  # tall arms and wide abdomens both have an anchor shape
    half, full = models.fitted_anchors(195)[0], models.fitted_anchors(389)[0]
    assert all(abs(2 * h - f) <= 2 for h, f in zip(half, full))
    # a 40-px arm at half size must have an anchor within a factor 1.5 of its side (128 px did not)
    assert min(half) <= 20 * 1.5


@pytest.mark.parametrize("arch", models.DETECTOR_ARCHS)
def test_every_detector_builds_and_takes_a_training_step(arch):
    torch.manual_seed(0)
    model = models.build_detector(arch, 4, image_size=(97, 168), proposals=50)
    anchors = model.rpn.anchor_generator
    assert anchors.sizes == (models.fitted_anchors(97)[0],) and len(anchors.sizes[0]) == 5
    images = [torch.rand(1, 97, 168) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 60.0, 50.0]]), "labels": torch.tensor([1])},
               {"boxes": torch.tensor([[30.0, 20.0, 120.0, 90.0]]), "labels": torch.tensor([4])}]
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) == {"boxes", "labels", "scores"}


def test_imagenet_init_says_where_to_put_the_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(models.InitError, match="resnet34-.*pth") as caught:
        models.build_classifier("resnet34", 4, init="imagenet")
    assert str(tmp_path) in str(caught.value) and "--init scratch" in str(caught.value)
    with pytest.raises(models.InitError, match="no ImageNet weights"):
        models.build_classifier("resnet8", 4, init="imagenet")


def test_imagenet_init_uses_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    from torchvision.models import resnet34

    reference = resnet34()
    path = models.imagenet_weights_path()
    path.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), path)
    model = models.build_classifier("resnet34", 4, init="imagenet")
    assert torch.allclose(model.layer1[0].conv1.weight, reference.layer1[0].conv1.weight)
    assert torch.allclose(model.conv1.weight, reference.conv1.weight.sum(1, keepdim=True))


def test_classification_metrics_by_hand():
    metrics = classification_metrics([0, 0, 1, 1, 2], [0, 1, 1, 1, 0], ["a", "b", "c", "d"])
    assert metrics["accuracy"] == pytest.approx(0.6)
    assert metrics["confusion"][0] == [1, 1, 0, 0] and metrics["confusion"][2] == [1, 0, 0, 0]
    assert metrics["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    assert metrics["per_class"]["a"]["recall"] == pytest.approx(0.5)
    # macro-F1 over classes seen (a, b, c): (0.5 + 0.8 + 0) / 3
    assert metrics["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_coco_metrics_perfect_and_missing():
    truth = [{"boxes": [[10, 10, 50, 40]], "labels": [0], "width": 672, "height": 389},
             {"boxes": [[100, 100, 80, 60]], "labels": [3], "width": 672, "height": 389}]
    perfect = [{"boxes": [[10, 10, 50, 40]], "labels": [0], "scores": [0.9]},
               {"boxes": [[100, 100, 80, 60]], "labels": [3], "scores": [0.8]}]
    assert coco_metrics(truth, perfect, schema.BOX_CATEGORIES)["mAP"] == pytest.approx(1.0)
    half = [perfect[0], {"boxes": [], "labels": [], "scores": []}]
    result = coco_metrics(truth, half, schema.BOX_CATEGORIES)
    assert result["per_class_AP"]["head"] == pytest.approx(1.0) and result["per_class_AP"]["abdomen"] == pytest.approx(0.0)
    # a head box at IoU 0.625 is right at .5, .55 and .6 of COCO's ten thresholds
    loose = [{"boxes": [[10, 10, 50, 25]], "labels": [0], "scores": [0.9]}, perfect[1]]
    result = coco_metrics(truth, loose, schema.BOX_CATEGORIES)
    assert result["per_class_AP50"]["head"] == pytest.approx(1.0) and result["per_class_AP"]["head"] == pytest.approx(0.3)


from conftest import QUICK_TRAINING as QUICK  # noqa: E402


@pytest.mark.parametrize("task", list(QUICK))
def test_quick_run_end_to_end(quick_runs, procedural_build, task):
    run = quick_runs / task
    summary = json.loads((run / "run.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert summary["protocol"] == "stream" and summary["evaluation_split"] == "test"
    assert summary["history"][0]["steps"] >= 1 and summary["cost"]["macs_g"] > 0 and summary["cost"]["memory_mb"] > 0
    if task == "bounds":
        assert {"mAP", "mAP50", "mAR100", "per_class_AP"} <= set(metrics)
    else:
        assert len(metrics["confusion"]) == len(schema.task_classes(task))
        # the reported accuracy is the share of predictions.json that match the dataset's labels
        from fpus23_dataset import load

        rows = load("orientation" if task == "probe" else task, path=procedural_build)["test"]
        truth = dict(zip(rows["image_id"], rows["probe" if task == "probe" else "label"]))
        predictions = json.loads((run / "predictions.json").read_text())
        classes = schema.task_classes(task)
        correct = sum(p["label"] == (truth[p["image_id"]] if isinstance(truth[p["image_id"]], str)
                                     else classes[truth[p["image_id"]]]) for p in predictions)
        assert metrics["samples"] == len(predictions) > 0
        assert metrics["accuracy"] == pytest.approx(correct / len(predictions))
        assert sum(metrics["confusion"][k][k] for k in range(len(classes))) == correct
        with Image.open(run / "confusion.png") as plot:
            assert plot.size[0] > 300
    bundle = json.loads((quick_runs / "bundles" / task / "bundle.json").read_text())
    assert bundle["classes"] == list(schema.task_classes(task)) and bundle["task"] == task
    assert bundle["dataset"]["version"] == "1.2.3" and bundle["dataset"]["fingerprint"]
    assert bundle["protocol"] == "stream" and bundle["input"]["height"] > 0
    # thresholds chosen on the validation split, one per class that the model predicted there
    assert bundle["thresholds"] == summary["thresholds"] and bundle["thresholds_chosen_on"] == "validation"
    assert set(bundle["thresholds"]) <= set(schema.task_classes(task))
    assert all(0.0 <= t <= 1.0 for t in bundle["thresholds"].values())
    if task != "bounds":  # a classifier predicts some class on every validation row
        assert bundle["thresholds"]


@pytest.mark.parametrize("task", list(QUICK))
def test_load_bundle_reproduces_the_run_predictions(quick_runs, procedural_build, task):
    from fpus23_dataset import load

    predictor = load_bundle(quick_runs / "bundles" / task)
    expected = json.loads((quick_runs / task / "predictions.json").read_text())
    rows = load("orientation" if task == "probe" else task, path=procedural_build)["test"]
    by_id = {r["image_id"]: r["image"] for r in rows}
    images = [by_id[p["image_id"]] for p in expected]
    got = predictor.predict(images)
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        if task == "bounds":
            assert g["labels"] == [schema.BOX_CATEGORIES[k] for k in e["labels"]]
            assert g["scores"] == pytest.approx(e["scores"], abs=1e-5)
            for a, b in zip(g["boxes"], e["boxes"]):
                assert a == pytest.approx(b, abs=1e-3)
        else:
            assert g["label"] == e["label"]
            assert [g["scores"][c] for c in schema.task_classes(task)] == pytest.approx(e["scores"], abs=1e-5)


def test_bundle_with_foreign_classes_is_refused(quick_runs, tmp_path):
    import shutil

    copy = tmp_path / "bundle"
    shutil.copytree(quick_runs / "bundles" / "anatomy", copy)
    meta = json.loads((copy / "bundle.json").read_text())
    meta["classes"] = ["head", "legs", "arms", "abdomen"]
    (copy / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="differ from the schema"):
        load_bundle(copy)
    with pytest.raises(BundleError, match="no bundle.json"):
        load_bundle(tmp_path)


def test_resume_continues_from_the_checkpoint(procedural_build, tmp_path):
    base = ["train", "--task", "anatomy", "--arch", "resnet8", "--data", str(procedural_build), "--out", str(tmp_path / "r"),
            "--max-steps", "2", "--batch-size", "4", "--image-scale", "0.15", "--eval-subset", "8", "--quiet"]
    assert baselines_main(base + ["--epochs", "1"]) == 0
    assert baselines_main(base + ["--epochs", "2", "--resume"]) == 0
    history = json.loads((tmp_path / "r" / "run.json").read_text())["history"]
    assert [h["epoch"] for h in history] == [0, 1]


def _markdown_rows(text: str) -> list[dict[str, str]]:
    """Every row of every Markdown table in `text`, as {header: cell}."""
    rows, header = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
        elif not set(line) <= set("|-"):
            rows.append(dict(zip(header, cells)))
    return rows


def test_report_quotes_the_paper_for_the_same_architecture(quick_runs, tmp_path):
    runs = load_runs([quick_runs / t for t in QUICK])
    text = table1(runs)
    assert "Protocol: stream" in text and "~99" not in text
    rows = {r["task"]: r for r in _markdown_rows(text) if "task" in r}
    assert set(rows) == set(QUICK)
    for run in runs:
        row, arch, task = rows[run["task"]], run["arch"], run["task"]
        table, figures = paper.baseline_figures(arch, task)
        source = f"paper (Table {table}, {paper.ARCH_LABEL[arch]})" if table else f"paper: no {paper.ARCH_LABEL[arch]} figures"
        quality = ("mAP", "mAR") if task == "bounds" else ("accuracy", "F1")
        metrics = ("mAP", "mAR") if task == "bounds" else ("accuracy", "f1")
        for name, metric in zip(quality + ("Flops", "memory (MB)"), metrics + ("flops", "memory_mb")):
            assert row[f"{source} {name}"] == (figures[metric].printed if metric in figures else "—"), (task, name)
        assert row[f"{PAPER_MACS_LABEL} (G)"] == str(run["cost"]["macs_224x224x3_g"])
        assert row["CPU ms/frame: median (p10–p90, load)"].startswith(f"{run['cost']['cpu_latency']['median_ms']:.1f} (p10–p90 ")
    # the quick runs are ResNet8 / ResNet10: Table 4's figures, never Table 1's ResNet34 ones
    assert rows["orientation"]["paper (Table 4, ResNet8) accuracy"] == "99.57%"
    assert rows["bounds"]["paper (Table 4, Faster R-CNN ResNet10) mAR"] == "81.30%"
    assert rows["probe"]["paper (Table 4, ResNet8) accuracy"] == "—"  # the paper has no probe classifier
    assert "99.80%" not in text and "98.60%" not in text
    assert baselines_main(["report", *(str(quick_runs / t) for t in QUICK), "--out", str(tmp_path / "t.md")]) == 0
    assert (tmp_path / "t.md").read_text() == text


def test_export_refuses_to_overwrite_without_force(quick_runs, tmp_path, capsys):
    bundle = tmp_path / "bundle"
    assert baselines_main(["export", str(quick_runs / "anatomy"), str(bundle)]) == 0
    written = (bundle / "bundle.json").stat().st_mtime_ns
    capsys.readouterr()
    assert baselines_main(["export", str(quick_runs / "anatomy"), str(bundle)]) == 1
    assert capsys.readouterr().err == f"error: {bundle} exists; pass --force to replace it\n"
    assert (bundle / "bundle.json").stat().st_mtime_ns == written
    assert baselines_main(["export", str(quick_runs / "anatomy"), str(bundle), "--force"]) == 0
    assert load_bundle(bundle).task == "anatomy"
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    capsys.readouterr()
    assert baselines_main(["export", str(quick_runs / "anatomy"), str(tmp_path / "mine"), "--force"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "not a model bundle" in err
    assert (tmp_path / "mine" / "notes.txt").read_text() == "mine"


def test_recipe_sets_resolve_to_what_they_document(monkeypatch, tmp_path):
    from baselines import train as training

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no ImageNet weights here
    paper_plane = training.TrainConfig(task="plane", recipe_set="paper").resolve()
    r = paper_plane.recipe
    assert (r["optimizer"], r["lr"], r["step_size"], r["gamma"], r["epochs"]) == ("adam", 1e-3, 20, 0.1, 15)
    assert r["flip"] == "copies" and r["balance_planes"] and paper_plane.image_scale == 1.0
    assert paper_plane.init == "scratch" and "ImageNet weights not provided" in paper_plane.init_note
    paper_bounds = training.TrainConfig(task="bounds", recipe_set="paper").resolve()
    assert paper_bounds.recipe["optimizer"] == "adam" and paper_bounds.recipe["lr"] == 1e-3
    assert not paper_bounds.recipe["balance_planes"]  # balancing is for the plane classes only
    ours = training.TrainConfig(task="bounds", arch="fasterrcnn_resnet10").resolve()
    assert ours.recipe["optimizer"] == "sgd" and ours.recipe["flip"] == "random" and ours.init == "scratch"
    assert ours.recipe["fpn"] and not paper_bounds.recipe["fpn"]
    assert not training.TrainConfig(task="bounds", fpn=False).resolve().recipe["fpn"]  # --no-fpn
    assert ours.image_scale == models.default_image_scale("fasterrcnn_resnet10")
    searched = training.TrainConfig(task="orientation", arch="resnet8", recipe_set="paper").resolve()
    assert searched.init == "scratch" and "no ImageNet weights" in searched.init_note
    with pytest.raises(ValueError, match="recipe 'mine'"):
        training.TrainConfig(task="plane", recipe_set="mine").resolve()


def test_flipped_copies_and_balanced_planes(procedural_build):
    from baselines.data import ClassificationDataset, InputSpec, balanced_indices
    from fpus23_dataset import load

    rows = load("plane", path=procedural_build)["train"]
    spec = InputSpec.at_scale(0.1)
    plain = ClassificationDataset(rows, spec, train=True, flip="none")
    copies = ClassificationDataset(rows, spec, train=True, flip="copies")
    assert len(copies) == 2 * len(plain) == 2 * len(rows)
    n = len(rows)
    for k in (0, n - 1):
        (a, la), (b, lb) = copies[k], copies[k + n]
        assert la == lb and torch.equal(a.flip(-1), b) and not torch.equal(a, b)
    labels = rows["label"]
    index = balanced_indices(labels, seed=0)
    counts = {c: sum(labels[i] == c for i in index) for c in set(labels)}
    assert len(set(counts.values())) == 1 and max(counts.values()) == max(labels.count(c) for c in set(labels))
    assert set(index) == set(range(len(labels)))  # every row is still used
    balanced = ClassificationDataset(rows, spec, train=True, flip="none", balance=True)
    assert len(balanced) == len(index)


def test_detector_trunk_from_a_classifier_and_a_narrow_box_head():
    torch.manual_seed(0)
    classifier = models.build_classifier("resnet8", 4)
    detector = models.build_detector("fasterrcnn_resnet10", 4, image_size=(97, 168), proposals=20, box_representation=64)
    copied = models.load_trunk(detector, classifier.state_dict())
    assert copied == len(classifier.state_dict()) - 2  # everything but the classifier's fc weight and bias
    assert torch.equal(detector.backbone.state_dict()["4.1.0.conv2.weight"], classifier.state_dict()["layers.1.0.conv2.weight"])
    assert detector.roi_heads.box_head.fc7.out_features == 64 and detector.roi_heads.box_predictor.cls_score.out_features == 5
    wide = models.build_detector("fasterrcnn_resnet10", 4, image_size=(97, 168), proposals=20)
    assert wide.roi_heads.box_head.fc7.out_features == 1024
    narrow_params = sum(p.numel() for p in detector.parameters())
    assert narrow_params < sum(p.numel() for p in wide.parameters()) - 20_000_000  # fc6 is 25088 x 1024 in the wide head


@pytest.mark.parametrize("arch", models.DETECTOR_ARCHS)
def test_feature_pyramid_detector_takes_the_fitted_anchors_finest_first(arch):
    torch.manual_seed(0)
    detector = models.build_detector(arch, 4, image_size=(97, 168), proposals=20, fpn=True)
    sizes = detector.rpn.anchor_generator.sizes
    assert len(sizes) == 4 and all(len(level) == 2 for level in sizes)
    assert [s for level in sizes for s in level] == list(models.fitted_anchors(97, 8)[0])
    classifier = models.build_classifier("resnet34" if arch.endswith("34") else "resnet8", 4)
    assert models.load_trunk(detector, classifier.state_dict()) == len(classifier.state_dict()) - 2
    losses = detector([torch.rand(1, 97, 168)], [{"boxes": torch.tensor([[5.0, 5.0, 25.0, 30.0]]), "labels": torch.tensor([2])}])
    sum(losses.values()).backward()


def test_torchrun_trains_one_run_on_two_ranks(procedural_build, tmp_path):
    """`torchrun --nproc_per_node 2` (gloo on CPU): each rank trains its shard of the flipped-copies set,
    rank 0 alone evaluates and writes, and run.json counts the images of both ranks."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "baselines.cli",
               "train", "--task", "anatomy", "--arch", "resnet8", "--data", str(procedural_build), "--out", str(out),
               "--epochs", "1", "--subset", "12", "--flip", "copies", "--batch-size", "4", "--image-scale", "0.15",
               "--eval-subset", "8", "--latency-runs", "2", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=Path(__file__).parents[1])
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("run folder:") == 1  # rank 1 prints nothing
    run = json.loads((out / "run.json").read_text())
    assert run["world_size"] == 2
    # 12 rows + their 12 mirrored copies, split 12/12 between the ranks: 3 batches of 4 each
    assert run["history"][0]["steps"] == 3 and run["history"][0]["images"] == 24
    assert len(json.loads((out / "predictions.json").read_text())) == 8
