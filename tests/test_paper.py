"""paper.py against the paper's own text, its footnotes recomputed, MACs by hand, latency records."""
from __future__ import annotations

import re

import pytest

from conftest import SHARED

torch = pytest.importorskip("torch", reason="baselines need the [baselines] extra (torch, torchvision)")

from baselines import cost, paper  # noqa: E402
from baselines.fetal_planes import CLASSES as DB_CLASSES  # noqa: E402
from fpus23_dataset import schema  # noqa: E402

PAPER_TEXT = SHARED / "reference" / "FPUS23_paper.txt"
TASK_OF_HEADER = {"Diagnostic Plane": "plane", "Fetus Orientation": "orientation", "Fetus Anatomy": "anatomy",
                  "Anatomy Bounds": "bounds"}
METRIC_OF_LABEL = {"Accuracy": "accuracy", "F1-Score": "f1", "mAP": "mAP", "mAR": "mAR", "No. of Flops": "flops",
                   "Memory (MB)": "memory_mb"}


@pytest.fixture(scope="module")
def text() -> str:
    if not PAPER_TEXT.is_file():
        pytest.skip(f"the paper's text is not at {PAPER_TEXT}")
    return PAPER_TEXT.read_text(encoding="utf-8")


def _block(text: str, start: str, end: str) -> list[list[str]]:
    """Tab-separated rows between two markers of the paper's text, empty cells dropped."""
    chunk = text[text.index(start):]
    chunk = chunk[:chunk.index(end)]
    return [[cell.strip() for cell in line.split("\t") if cell.strip()] for line in chunk.splitlines() if "\t" in line]


@pytest.mark.parametrize("table, start, end, classifier, detector", [
    (2, "Table 2: Exhaustive", "on the test set presented", "resnet34", "fasterrcnn_resnet34"),
    (4, "NAS: DNN Model Evaluation", "number of Flops and memory while", "resnet8", "fasterrcnn_resnet10"),
])
def test_every_cell_of_tables_2_and_4_matches_the_text(text, table, start, end, classifier, detector):
    task, checked = None, 0
    columns = [(p, q) for p in paper.PRUNES for q in paper.PRECISIONS]
    for row in _block(text, start, end):
        header = next((t for h, t in TASK_OF_HEADER.items() if row[0].startswith(h)), None)
        if header:
            task = header
            continue
        if row[0] not in METRIC_OF_LABEL:
            continue
        metric = METRIC_OF_LABEL[row[0]]
        arch, tasks = (detector, ["bounds"]) if task == "bounds" else (classifier, [task] if task else ["plane", "orientation", "anatomy"])
        assert len(row) == 9, row
        for one in tasks:
            for (prune, precision), printed in zip(columns, row[1:]):
                assert paper.paper_figure(table, arch, one, metric, prune, precision).printed == printed, (one, metric, prune, precision)
                checked += 1
    assert checked == 8 * (2 * 3 + 2 * 3 + 4)  # classifier cost rows for each task, quality rows, detector rows


def test_table1_matches_the_text(text):
    rows = {r[0]: r[1:] for r in _block(text, "Table 1: Preliminary", "with boxes representing")}
    for header, task in TASK_OF_HEADER.items():
        cells = rows[header]
        if task == "bounds":
            assert cells == ["mAP " + paper.paper_figure(1, "fasterrcnn_resnet34", task, "mAP").printed,
                             "mAR " + paper.paper_figure(1, "fasterrcnn_resnet34", task, "mAR").printed,
                             paper.paper_figure(1, "fasterrcnn_resnet34", task, "flops").printed,
                             paper.paper_value(1, "fasterrcnn_resnet34", task, "memory_mb")]
        else:
            assert cells[:2] == [paper.paper_figure(1, "resnet34", task, "accuracy").printed, paper.paper_value(1, "resnet34", task, "f1")]
    assert rows["Fetus Orientation"][2:] == [paper.paper_figure(1, "resnet34", "plane", "flops").printed,
                                             paper.paper_value(1, "resnet34", "anatomy", "memory_mb")]


def test_tables_3_5_6_7_match_the_text(text):
    counts = [r for r in _block(text, "Table 3: Breakdown", "Appendix A.") if all(re.fullmatch(r"[\d,]+", c) for c in r)]
    for task, row in zip(("plane", "orientation", "anatomy", "bounds"), counts):
        assert row == [paper.paper_value(3, paper.TABLE3_ARCH, task, f"count:{c}") for c in schema.class_names(task)]
    rows = {r[0]: r[1:] for r in _block(text, "Metric\tImageNet-trained", "Table 5:")}
    for metric, label in (("errors", "Number of Errors"), ("total", "Total Number of Images"), ("accuracy", "Accuracy Percentage")):
        assert rows[label] == [paper.paper_value(5, "resnet34", "plane", metric, init=i) for i in ("imagenet", "fpus23")]
    for table, start in ((6, "Fig. 5 provides"), (7, "Table 6: Class-wise")):
        block = _block(text, start, f"Table {table}: Class-wise")
        matrix = [[int(c) for c in r[-4:]] for r in block if len(r) >= 5 and r[-1].isdigit()]
        assert matrix == paper.confusion_matrix(table)
        accuracy = next(r for r in block if r[0] == "Accuracy")[1:]
        assert accuracy == [paper.paper_value(table, "resnet34", "plane", f"class_accuracy:{c}", init=paper.CONFUSION[table][0])
                            for c in DB_CLASSES]


def test_footnotes_are_computed_from_the_figures():
    m6, m7 = paper.confusion_matrix(6), paper.confusion_matrix(7)
    assert sum(map(sum, m7)) == 656 and sum(m7[k][k] for k in range(4)) == 598
    assert "598/656 = 91.16 %" in paper.FOOTNOTES["table7-diagonal"] and "91.92 %" in paper.FOOTNOTES["table7-diagonal"]
    assert "594/656 = 90.55 %" in paper.FOOTNOTES["table6-diagonal"] and sum(m6[k][k] for k in range(4)) == 594
    single = paper.FOOTNOTES["table5-single-class"]
    assert "94/656 = the share of Fetal brain" in single and "337/656 = the share of Fetal thorax" in single
    assert "Table 1 resnet34 anatomy FP32 0%: F1 .9989 vs accuracy 99.46 %" in paper.FOOTNOTES["f1-above-accuracy"]
    assert "ResNet34: yes; ResNet8: yes" in paper.FOOTNOTES["int8-memory"]
    # per-class accuracy of Tables 6-7 = diagonal / column sum, as printed
    for table, m in ((6, m6), (7, m7)):
        init = paper.CONFUSION[table][0]
        for k, c in enumerate(DB_CLASSES):
            column = sum(row[k] for row in m)
            assert f"{100 * m[k][k] / column:.2f}" == paper.paper_value(table, "resnet34", "plane", f"class_accuracy:{c}", init=init)


def test_lookups_and_appendix():
    assert paper.paper_value(1, "resnet34", "anatomy", "f1") == ".9989"
    assert paper.paper_value(4, "resnet8", "plane", "accuracy") == "99.24"
    assert paper.paper_figure(4, "fasterrcnn_resnet10", "bounds", "mAR").printed == "81.30%"
    assert paper.paper_value(2, "resnet34", "plane", "flops", 0.3, "int8") == "-"
    assert paper.paper_value(1, "resnet8", "plane", "accuracy") is None  # never another arch's figure
    assert paper.baseline_figures("resnet8", "orientation")[0] == 4
    assert paper.baseline_figures("resnet8", "orientation")[1]["accuracy"].value == "99.57"
    assert paper.baseline_figures("resnet10", "plane") == (None, {})
    appendix = paper.paper_tables_markdown()
    for table in (1, 2, 3, 4, 5, 6, 7):
        assert f"Table {table}" in appendix
    assert "| Abdomen | 39 | 0 | 5 | 0 |" in appendix and "[table7-diagonal]" in appendix


def test_mac_count_matches_a_hand_count():
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1, bias=False), torch.nn.AdaptiveAvgPool2d(2),
                              torch.nn.Flatten(), torch.nn.Linear(16, 10))
    # conv: output elements (4 x 8 x 8) x kernel (3 x 3) x input channels (1); linear: 16 x 10
    assert cost.count_macs(net, torch.rand(1, 1, 8, 8), detector=False) == 4 * 8 * 8 * 9 * 1 + 16 * 10
    # paper convention: 224 x 224 and 3 input channels
    assert cost.macs_at_paper_convention(net, detector=False) == 4 * 224 * 224 * 9 * 3 + 16 * 10


def test_paper_convention_reproduces_table1_and_table4_flops():
    from baselines.models import build_classifier

    resnet34 = cost.macs_at_paper_convention(build_classifier("resnet34", 4), detector=False) / 1e9
    assert f"{resnet34:.2f}" == "3.66" and abs(resnet34 - float(paper.paper_value(1, "resnet34", "plane", "flops"))) < 0.01
    resnet8 = cost.macs_at_paper_convention(build_classifier("resnet8", 4), detector=False) / 1e9
    assert f"{2 * resnet8:.2f}" == paper.paper_value(4, "resnet8", "plane", "flops")  # footnote [resnet8-flops]


def test_latency_records_spread_and_load_and_warns_when_busy(monkeypatch, capsys):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.Flatten())
    # our own last epoch raises the load average; what counts is other processes' use right now
    monkeypatch.setattr(cost.os, "getloadavg", lambda: (99.0, 9.0, 1.0))
    monkeypatch.setattr(cost, "_cpu_busy_now", lambda: 0.1)
    stats = cost.cpu_latency(net, torch.rand(1, 1, 16, 16), detector=False, runs=7, warmup=2)
    assert stats["runs"] == 7 and stats["warmup"] == 2 and not stats["busy"] and stats["busy_before"] == 0.1
    assert stats["min_ms"] <= stats["p10_ms"] <= stats["median_ms"] <= stats["p90_ms"] <= stats["max_ms"]
    assert stats["load_avg_before"] == [99.0, 9.0, 1.0] and stats["cpu_count"] >= 1 and stats["torch_threads"] >= 1
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cost, "_cpu_busy_now", lambda: 0.9)
    assert cost.cpu_latency(net, torch.rand(1, 1, 16, 16), detector=False, runs=2)["busy"]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: machine busy (other processes used 90%")
    monkeypatch.setattr(cost, "_cpu_busy_now", lambda: None)  # no /proc/stat: the load average decides
    assert cost.cpu_latency_ms(net, torch.rand(1, 1, 16, 16), detector=False, runs=2) > 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("warning: machine busy (1-min load average 99.0")


def test_busy_share_reads_the_cpus_now():
    share = cost._cpu_busy_now(0.2)
    if share is None:
        pytest.skip("no /proc/stat on this platform")
    assert 0.0 <= share <= 1.0
    import os
    import subprocess
    import sys
    import time

    import threading

    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # one CPU kept busy by another process
    try:
        time.sleep(0.3)
        assert cost._cpu_busy_now(0.5) >= 0.8 / os.cpu_count()
    finally:
        spinner.kill()
        spinner.wait()
    baseline = cost._cpu_busy_now(0.5)
    stop = threading.Event()
    own = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])  # this process's own thread spinning
    own.start()
    try:
        # not counted as other processes' load (counted, it would add a whole CPU: 1 / cpu_count)
        assert cost._cpu_busy_now(0.5) - baseline < 0.5 / os.cpu_count()
    finally:
        stop.set()
        own.join()
