"""Pruning, INT8 quantisation-aware training, Tables 2/4, compressed bundles in the CVAT plugin."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch", reason="baselines need the [baselines] extra (torch, torchvision)")
pytest.importorskip("torchao", reason="INT8 needs torchao (the [baselines] extra pins it)")


from baselines import models, prune  # noqa: E402
from baselines.cli import main as baselines_main  # noqa: E402
from baselines.cost import count_macs, parameter_memory_mb  # noqa: E402
from baselines import paper  # noqa: E402
from baselines.report import compression_tables, load_runs  # noqa: E402
from fpus23_dataset import schema  # noqa: E402


@pytest.mark.parametrize("amount", [0.3, 0.5, 0.7])
def test_global_pruning_reaches_the_requested_sparsity_and_the_model_still_runs(amount):
    torch.manual_seed(0)
    model = models.build_classifier("resnet8", 4)
    fresh_keys = set(model.state_dict())
    prune.prune_globally(model, amount)
    prune.make_permanent(model)
    assert prune.sparsity(model) == pytest.approx(amount, abs=0.002)
    assert set(model.state_dict()) == fresh_keys  # a plain state_dict: loadable by any resnet8
    x = torch.randn(2, 1, 68, 118)
    assert torch.isfinite(model(x)).all()
    # one global threshold: layers are not pruned uniformly (Han et al.'s global magnitude criterion)
    per_layer = [float((m.weight == 0).float().mean()) for m, _ in prune.prunable(model)]
    assert max(per_layer) - min(per_layer) > 0.1
    dense = count_macs(model, x[:1], detector=False)
    skipped = prune.zero_macs(model, x[:1], detector=False)
    assert 0.5 * amount * dense < skipped < dense
    assert prune.sparse_memory_mb(model) < parameter_memory_mb(model)


def test_pruning_a_detector_counts_its_zero_macs():
    torch.manual_seed(0)
    model = models.build_detector("fasterrcnn_resnet10", 3, image_size=(78, 134), proposals=20)
    prune.prune_globally(model, 0.5)
    prune.make_permanent(model)
    assert prune.sparsity(model) == pytest.approx(0.5, abs=0.002)
    example = torch.rand(1, 1, 78, 134)
    assert prune.zero_macs(model, example, detector=True) > 0


def test_bad_prune_amount_is_refused():
    with pytest.raises(ValueError, match="prune amount"):
        prune.prune_globally(models.build_classifier("resnet8", 4), 1.0)


@pytest.fixture(scope="module")
def compressed(quick_runs, tmp_path_factory):
    """The quick orientation run (ResNet8), pruned 50% and quantised to INT8, and its bundle."""
    out = tmp_path_factory.mktemp("compressed")
    run = out / "orientation-p50-int8"
    assert baselines_main(["compress", str(quick_runs / "orientation"), "--out", str(run), "--prune", "0.5", "--int8",
                           "--max-steps", "4", "--eval-subset", "48", "--latency-runs", "5", "--quiet"]) == 0
    bundle = out / "bundles" / "orientation-int8"
    assert baselines_main(["export", str(run), str(bundle)]) == 0
    return run, bundle


def test_compress_prunes_quantises_and_reports(compressed, quick_runs):
    run_dir, _ = compressed
    run = json.loads((run_dir / "run.json").read_text())
    c = run["compression"]
    assert run["precision"] == "int8" and c["prune"] == 0.5
    assert c["sparsity"] == pytest.approx(0.5, abs=0.002)
    assert c["effective_macs_g"] < c["dense_macs_g"]
    fp32, int8 = c["fp32"], c["int8"]
    assert int8["memory_dense_mb"] < fp32["memory_dense_mb"] / 3  # INT8 weights: a quarter of FP32, plus scales
    assert fp32["memory_sparse_mb"] < fp32["memory_dense_mb"] and int8["memory_sparse_mb"] < int8["memory_dense_mb"]
    assert int8["cpu_latency_ms"] > 0 and fp32["cpu_latency_ms"] > 0
    assert int8["metrics"]["samples"] == fp32["metrics"]["samples"] == run["evaluation_rows"] > 0
    # INT8 vs its FP32 twin on the same synthetic test frames (QAT fine-tunes a few steps: not bit-identical)
    assert int8["agreement_with_fp32"] >= 0.75
    # quantisation alone: INT8 against the very same weights run in FP32
    assert int8["agreement_with_same_weights_fp32"] >= 0.9
    assert abs(int8["metrics"]["accuracy"] - int8["same_weights_fp32_metrics"]["accuracy"]) <= 0.1
    # the pruned weights stayed zero through QAT: the saved QAT state has them
    state = torch.load(run_dir / "model.int8-qat.pt", weights_only=True)
    conv = [v for k, v in state.items() if k.endswith("conv2.weight") and v.dim() == 4]
    assert conv and all(float((w == 0).float().mean()) > 0.2 for w in conv)
    table = compression_tables(load_runs([run_dir]))
    assert "| 50% | FP32 | 50.0 |" in table and "| 50% | INT8 | 50.0 |" in table and "0% (trained run)" in table
    # every (prune, precision) cell of Table 4 for ResNet8 orientation, run here or not, with the paper's figures
    lines = [line for line in table.splitlines() if line.startswith("| ") and "%" in line.split("|")[1]]
    assert len(lines) == 8  # the trained run (0% FP32), our 50% FP32 and INT8, and the paper's five others
    for prune in paper.PRUNES:
        for precision in paper.PRECISIONS:
            cells = [paper.paper_figure(4, "resnet8", "orientation", m, prune, precision).printed
                     for m in ("accuracy", "f1", "flops", "memory_mb")]
            assert any(line.split("|")[2].strip() == precision.upper() and line.split("|")[1].strip().startswith(f"{prune:.0%}")
                       and line.rstrip(" |").endswith(" | ".join(cells)) for line in lines), (prune, precision)
    assert "| 30% | FP32 | not run |" in table


def test_int8_bundle_reproduces_the_compressed_run_and_serves_in_the_plugin(compressed, procedural_build):
    from cvat_plugin.functions import load_functions
    from fpus23_dataset import load

    run_dir, bundle = compressed
    meta = json.loads((bundle / "bundle.json").read_text())
    assert meta["precision"] == "int8" and (bundle / meta["int8_state"]).is_file()
    expected = json.loads((run_dir / "predictions.json").read_text())[:12]
    rows = load("orientation", path=procedural_build)["test"]
    by_id = {r["image_id"]: r["image"] for r in rows}
    # what the CVAT plugin does: discover the bundle folder, rebuild the INT8 graph from its QAT state
    functions = load_functions(bundle.parent)
    function = functions[f"fpus23-{bundle.name}"]
    got = function.run([by_id[e["image_id"]] for e in expected], 0.0)
    values = schema.ORIENTATION.cvat_value_of
    # the same classes as the compressed run measured, as CVAT tags of the real schema
    assert [[(i["label"], i["attributes"][0]["value"]) for i in items] for items in got] == [
        [(schema.ORIENTATION.cvat_label, values[e["label"]])] for e in expected]


def test_int8_detector_quantises_its_trunk(quick_runs, tmp_path):
    out = tmp_path / "bounds-int8"
    assert baselines_main(["compress", str(quick_runs / "bounds"), "--out", str(out), "--int8", "--max-steps", "2",
                           "--eval-subset", "6", "--latency-runs", "2", "--quiet"]) == 0
    c = json.loads((out / "run.json").read_text())["compression"]
    assert c["int8"]["quantized_part"].startswith("trunk")
    assert c["int8"]["memory_dense_mb"] < c["fp32"]["memory_dense_mb"]
    assert set(c["int8"]["metrics"]) >= {"mAP", "mAP50", "mAR100"}


def test_compress_refuses_a_folder_that_is_not_a_run(tmp_path):
    from baselines.compress import CompressConfig, compress

    with pytest.raises(FileNotFoundError, match="no run.json"):
        compress(CompressConfig(run=str(tmp_path)))
    with pytest.raises(ValueError, match=r"--prune must be in \[0, 1\)"):
        compress(CompressConfig(run=str(tmp_path), prune=1.5))
