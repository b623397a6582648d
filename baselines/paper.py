"""The paper's figures, exactly as printed: one source of truth for every report.

Prabakaran et al., "FPUS23: An Ultrasound Fetus Phantom Dataset ...", IEEE Access 2023. Tables 1,
2, 4 (quality and cost), 3 (class counts), 5-7 (transfer to FETAL_PLANES_DB) and the few figures
the text gives (section 4.4, Appendix D). Values are strings as the paper prints them ("98.29" with
unit "%", ".9833" with no unit, "3.67" with unit "G", "-" where the paper prints a dash), so a
report shows the paper's own digits and a test can compare them with the paper's text.

Why a separate module: reports, the transfer tables and the `reproduce` command all quote the
paper; one table keyed by (table, arch, task, metric, prune, precision, init) keeps them from
drifting apart or quoting a ResNet34 figure beside a ResNet8 run.

Keys use the project's names: archs `resnet34`, `resnet8`, `fasterrcnn_resnet34`,
`fasterrcnn_resnet10`; tasks from `fpus23_dataset.schema`; class names from the schema (Table 3)
and from `fetal_planes.CLASSES` (Tables 5-7). `FOOTNOTES` lists the paper's own inconsistencies,
computed from the figures below wherever possible.
"""
from __future__ import annotations

from dataclasses import dataclass

from fpus23_dataset import schema

from .fetal_planes import CLASSES as DB_CLASSES

PLANE, ORIENTATION, ANATOMY = schema.PLANE.key, schema.ORIENTATION.key, schema.ANATOMY.key
BOUNDS = schema.DETECTION_TASK
CLASSIFIER_TASKS = (PLANE, ORIENTATION, ANATOMY)  # the paper's row order (Tables 1, 2, 4)
PRUNES = (0.0, 0.3, 0.5, 0.7)  # section 4.3: "30%, 50%, and 70% pruned"
PRECISIONS = ("fp32", "int8")
TABLE3_ARCH = "dataset"  # Table 3 counts belong to no model
TEXT = 0  # `table` of figures the paper gives in its text, not in a table


@dataclass(frozen=True)
class PaperFigure:
    """One printed figure. `value` is the paper's digits; `unit` what followed them ("%", "G", "MB")."""

    table: int
    arch: str
    task: str
    metric: str
    value: str
    prune: float = 0.0
    precision: str = "fp32"
    unit: str = ""
    init: str | None = None  # Tables 5-7 and text: "imagenet" or "fpus23" (which model the row is)
    note: str | None = None

    @property
    def key(self) -> tuple:
        return (self.table, self.arch, self.task, self.metric, self.prune, self.precision, self.init)

    @property
    def printed(self) -> str:
        """As the paper prints it: "98.29%", ".9833", "3.67G", "157.57"."""
        return self.value + (self.unit if self.unit in ("%", "G") and self.value != "-" else "")

    def number(self) -> float | None:
        """The value as a number in the paper's unit (98.29 for "98.29%"); None for "-"."""
        return None if self.value == "-" else float(self.value.replace(",", ""))


FIGURES: list[PaperFigure] = []


def _add(table: int, arch: str, task: str, metric: str, value: str, unit: str = "", **extra) -> None:
    FIGURES.append(PaperFigure(table, arch, task, metric, value, unit=unit, **extra))


# --- Table 1: the ResNet34 baselines (section 4.2). FLOPs and memory are one merged cell for the
# three classifiers; it is stored for each of them.
for _task, _acc, _f1 in ((PLANE, "98.29", ".9833"), (ORIENTATION, "99.80", ".9936"), (ANATOMY, "99.46", ".9989")):
    _add(1, "resnet34", _task, "accuracy", _acc, "%")
    _add(1, "resnet34", _task, "f1", _f1)
    _add(1, "resnet34", _task, "flops", "3.67", "G", note="one cell for the three classifiers")
    _add(1, "resnet34", _task, "memory_mb", "157.57", "MB", note="one cell for the three classifiers")
_add(1, "fasterrcnn_resnet34", BOUNDS, "mAP", "98.60", "%")
_add(1, "fasterrcnn_resnet34", BOUNDS, "mAR", "84.40", "%")
_add(1, "fasterrcnn_resnet34", BOUNDS, "flops", "64.4", "G")
_add(1, "fasterrcnn_resnet34", BOUNDS, "memory_mb", "357.20", "MB")


def _compression_table(table: int, classifier: str, detector: str, rows: dict) -> None:
    """Tables 2 and 4: eight columns, pruning (0/30/50/70 %) x precision (FP32/INT8)."""
    columns = [(p, q) for p in PRUNES for q in PRECISIONS]
    for (task, metric, unit), cells in rows.items():
        arch = detector if task == BOUNDS else classifier
        tasks = CLASSIFIER_TASKS if task == "classifiers" else (task,)
        for one in tasks:
            for (prune, precision), value in zip(columns, cells.split()):
                _add(table, arch, one, metric, value, unit, prune=prune, precision=precision)


# --- Table 2: the compressed ResNet34 baselines (section 4.3). The first FLOPs/memory rows cover
# the three classifiers; the last two the detector.
_compression_table(2, "resnet34", "fasterrcnn_resnet34", {
    ("classifiers", "flops", "G"): "3.67 - 2.58 - 1.85 - 1.12 -",
    ("classifiers", "memory_mb", "MB"): "157.57 39.39 125.82 31.45 104.65 26.16 83.48 20.87",
    (PLANE, "accuracy", "%"): "98.29 97.34 98.10 98.29 98.10 97.91 97.72 99.25",
    (PLANE, "f1", ""): ".9833 .9759 .9818 .9832 .9813 .9799 .9799 .9834",
    (ORIENTATION, "accuracy", "%"): "99.80 99.73 99.49 99.93 99.55 99.87 99.68 99.93",
    (ORIENTATION, "f1", ""): ".9936 .9992 .9949 .9994 .9956 .9988 .9968 .9994",
    (ANATOMY, "accuracy", "%"): "99.46 99.46 99.57 99.89 99.78 99.89 99.67 99.78",
    (ANATOMY, "f1", ""): ".9989 .9749 .9952 .9987 .9978 .9987 .9968 .9978",
    (BOUNDS, "mAP", "%"): "98.60 98.60 98.00 98.00 98.80 97.80 98.40 98.00",
    (BOUNDS, "mAR", "%"): "84.40 81.20 87.90 78.50 85.90 78.60 86.00 79.80",
    (BOUNDS, "flops", "G"): "64.40 - 45.09 - 32.21 - 19.33 -",
    (BOUNDS, "memory_mb", "MB"): "357.20 239.02 250.04 155.67 178.60 100.11 107.16 44.55",
})

# --- Table 4: the searched networks (Appendix C): ResNet8 classifiers, Faster R-CNN on ResNet10.
_compression_table(4, "resnet8", "fasterrcnn_resnet10", {
    ("classifiers", "flops", "G"): "1.42 - 1.00 - 0.73 - 0.45 -",
    ("classifiers", "memory_mb", "MB"): "41.26 10.31 37.03 9.25 34.21 8.55 31.38 7.84",
    (PLANE, "accuracy", "%"): "99.24 98.29 99.62 98.67 99.24 99.43 99.24 97.72",
    (PLANE, "f1", ""): ".9930 .9821 .9965 .9877 .9930 .9947 .9930 .9789",
    (ORIENTATION, "accuracy", "%"): "99.57 99.61 99.83 98.60 99.53 99.80 99.70 99.80",
    (ORIENTATION, "f1", ""): ".9980 .9962 .9976 .9861 .9935 .9982 .9957 .9982",
    (ANATOMY, "accuracy", "%"): "99.89 99.78 99.89 99.89 99.89 99.67 99.78 99.46",
    (ANATOMY, "f1", ""): ".9987 .9975 .9987 .9987 .9987 .9969 .9975 .9934",
    (BOUNDS, "mAP", "%"): "97.90 97.90 97.30 97.50 97.20 97.60 97.20 97.30",
    (BOUNDS, "mAR", "%"): "81.30 78.90 75.80 75.30 76.20 75.70 76.90 75.00",
    (BOUNDS, "flops", "G"): "28.18 - 19.74 - 14.11 - 8.46 -",
    (BOUNDS, "memory_mb", "MB"): "290.84 194.61 203.59 126.74 145.42 81.51 87.25 36.27",
})

# --- Table 3: labelled samples per class (Appendix A), in the paper's column order, which is the
# schema's class order for every task.
for _task, _counts in ((PLANE, "1,386 1,280 1,281 1,318"), (ORIENTATION, "3,757 3,235 3,980 4,756"),
                       (ANATOMY, "3,003 1,629 2,159 2,526"), (BOUNDS, "4,370 4,853 4,572 6,435")):
    for _cls, _count in zip(schema.class_names(_task), _counts.split()):
        _add(3, TABLE3_ARCH, _task, f"count:{_cls}", _count)

# --- Tables 5-7: transfer to FETAL_PLANES_DB (section 4.4, Appendix D). The paper's model is its
# ResNet34 baseline ("we train the baseline model on the FPUS23 dataset"). Classes are the
# database's (`fetal_planes.CLASSES`), in the paper's column order Abdomen, Brain, Femur, Thorax.
for _init, _errors, _acc in (("imagenet", "562", "14.33"), ("fpus23", "319", "51.37")):
    _add(5, "resnet34", PLANE, "errors", _errors, init=_init)
    _add(5, "resnet34", PLANE, "total", "656", init=_init)
    _add(5, "resnet34", PLANE, "accuracy", _acc, "%", init=_init)

# rows = prediction, columns = ground truth, as printed; last: per-class accuracy (% of the column)
CONFUSION = {
    6: ("imagenet", 5, [[52, 11, 12, 1], [0, 72, 2, 0], [7, 2, 134, 0], [13, 9, 5, 336]],
        ["72.22", "76.60", "87.58", "99.70"]),
    7: ("fpus23", 1, [[39, 0, 5, 0], [3, 91, 7, 6], [21, 1, 137, 0], [9, 2, 4, 331]],
        ["54.17", "96.81", "89.54", "98.22"]),
}
for _table, (_init, _epochs, _matrix, _accs) in CONFUSION.items():
    for _p, _row in zip(DB_CLASSES, _matrix):
        for _t, _count in zip(DB_CLASSES, _row):
            _add(_table, "resnet34", PLANE, f"confusion:{_p}:{_t}", str(_count), init=_init,
                 note=f"fine-tuned for {_epochs} epoch{'s' if _epochs > 1 else ''}")
    for _t, _acc in zip(DB_CLASSES, _accs):
        _add(_table, "resnet34", PLANE, f"class_accuracy:{_t}", _acc, "%", init=_init)

# --- Figures from the text (table = TEXT): section 4.4 and Appendix D.
_add(TEXT, "resnet34", PLANE, "accuracy_after_1_epoch", "91.92", "%", init="fpus23", note="section 4.4 (Model-1)")
_add(TEXT, "resnet34", PLANE, "epochs_to_same_accuracy", ">16", init="imagenet", note="section 4.4 (Model-2)")
_add(TEXT, "resnet34", PLANE, "weight_change_sum_sq", "2.01e-7", init="fpus23", note="section 4.4")
_add(TEXT, "resnet34", PLANE, "weight_change_sum_sq", "3.02e-6", init="imagenet", note="section 4.4")
_add(TEXT, "resnet34", PLANE, "subset40_accuracy", "92", "%", init="fpus23", note="Appendix D, 40% of the training data")
_add(TEXT, "resnet34", PLANE, "subset40_accuracy", "88", "%", init="imagenet", note="Appendix D, 40% of the training data")

_BY_KEY = {f.key: f for f in FIGURES}
assert len(_BY_KEY) == len(FIGURES), "duplicate paper figure"
del _task, _acc, _f1, _counts, _cls, _count, _init, _errors, _table, _epochs, _matrix, _accs, _p, _row, _t


def paper_figure(table: int, arch: str, task: str, metric: str, prune: float = 0.0, precision: str = "fp32",
                 init: str | None = None) -> PaperFigure | None:
    """The figure the paper prints at this key, or None where the paper has none."""
    return _BY_KEY.get((table, arch, task, metric, round(float(prune), 2), precision, init))


def paper_value(table: int, arch: str, task: str, metric: str, prune: float = 0.0, precision: str = "fp32",
                init: str | None = None) -> str | None:
    """The digits as printed ("98.29", ".9833", "-"), or None."""
    figure = paper_figure(table, arch, task, metric, prune, precision, init)
    return figure.value if figure else None


def figures(**match) -> list[PaperFigure]:
    """All figures whose fields equal `match` (e.g. figures(table=4, task="plane"))."""
    return [f for f in FIGURES if all(getattr(f, k) == v for k, v in match.items())]


# Which table holds the paper's figures for an architecture of ours: ResNet34 models are the
# baselines (Tables 1 and 2); ResNet8 classifiers and the ResNet10 detector are the searched
# networks (Table 4, Appendix C). Other archs (our resnet10 classifier) have no paper figures.
SOURCE_TABLE = {"resnet34": (1, 2), "fasterrcnn_resnet34": (1, 2), "resnet8": (4, 4), "fasterrcnn_resnet10": (4, 4)}
ARCH_LABEL = {"resnet34": "ResNet34", "fasterrcnn_resnet34": "Faster R-CNN ResNet34", "resnet8": "ResNet8",
              "fasterrcnn_resnet10": "Faster R-CNN ResNet10", "resnet10": "ResNet10"}


def source_table(arch: str, compressed: bool = False) -> int | None:
    """The table with the paper's figures for `arch` (uncompressed: Table 1 or Table 4's 0% FP32)."""
    tables = SOURCE_TABLE.get(arch)
    return None if tables is None else tables[1 if compressed else 0]


def baseline_figures(arch: str, task: str) -> tuple[int | None, dict[str, PaperFigure]]:
    """The paper's uncompressed figures for our (arch, task): (table, {metric: figure}).

    ResNet34 -> Table 1; ResNet8 / ResNet10 detector -> Table 4, 0% pruned, FP32 column. Never a
    figure of another architecture: an arch the paper did not run gets (None, {}).
    """
    table = source_table(arch)
    if table is None:
        return None, {}
    return table, {f.metric: f for f in figures(table=table, arch=arch, task=task, prune=0.0, precision="fp32")}


def confusion_matrix(table: int) -> list[list[int]]:
    """Table 6 or 7: rows = prediction, columns = ground truth, in `fetal_planes.CLASSES` order."""
    return [[int(paper_value(table, "resnet34", PLANE, f"confusion:{p}:{t}", init=CONFUSION[table][0]))
             for t in DB_CLASSES] for p in DB_CLASSES]


def _pct(numerator: int, denominator: int) -> str:
    return f"{100 * numerator / denominator:.2f}"


def _footnotes() -> dict[str, str]:
    """The paper's own inconsistencies, each computed from the figures above where it can be."""
    notes: dict[str, str] = {}
    for table in (6, 7):
        m = confusion_matrix(table)
        total = sum(map(sum, m))
        diagonal = sum(m[k][k] for k in range(4))
        columns = [sum(row[k] for row in m) for k in range(4)]
        notes[f"table{table}-diagonal"] = (
            f"Table {table}: the diagonal is {diagonal}/{total} = {_pct(diagonal, total)} % overall accuracy "
            f"(column sums {'/'.join(map(str, columns))})"
            + ("; section 4.4 says 91.92 % after 1 epoch." if table == 7 else
               "; Appendix D says the ImageNet-trained model reaches the FPUS23-trained accuracy only after 15 epochs."))
    m6 = confusion_matrix(6)
    columns = {c: sum(row[k] for row in m6) for k, c in enumerate(DB_CLASSES)}
    total = sum(columns.values())
    shares = []
    for init in ("imagenet", "fpus23"):
        accuracy = paper_value(5, "resnet34", PLANE, "accuracy", init=init)
        errors = int(paper_value(5, "resnet34", PLANE, "errors", init=init))
        match = [c for c, n in columns.items() if _pct(n, total) == accuracy]
        shares.append(f"{accuracy} % ({init}) = {total - errors}/{total}"
                      + (f" = the share of {match[0]} in the test images (a column sum of Tables 6-7)" if match else ""))
    notes["table5-single-class"] = ("Table 5: " + "; ".join(shares)
                                    + ". Both accuracies equal what always predicting one class would score.")
    notes["table5-total"] = (f"Table 5: Total {total} images, the column sums of Tables 6-7; the paper does not say "
                             "how many of the database's test images it used or how these were chosen.")
    notes["scheduler"] = ("Section 4.1: Adam at 0.001 'with a step size of 20 and gamma = 0.1' over 15 epochs: a "
                          "step scheduler stepped per epoch never fires, so the rate is 0.001 throughout.")
    notes["epochs"] = ("Section 4.4 says Model-2 (ImageNet) needs 'more than 16 epochs' to match; Appendix D says "
                       "'after 15 epochs', and Table 6 shows it after 5 epochs.")
    notes["appendix-b"] = ("Appendix B: the mAP and mAR formulas (1) and (2) are identical pixel-wise IoU formulas "
                           "(p_ij = pixels of class i labelled j), not COCO average precision/recall, although the "
                           "text names IoU=[.50:.05:.95]; our detectors report COCO mAP@[.5:.95] and mAR@100.")
    notes["flops"] = ("Table 1 'No. of Flops' 3.67G is ResNet34's multiply-accumulates at ImageNet size, 224x224x3 "
                      "(torchvision resnet34: 3.664 G in convolutions and the linear layer, 3.668 G with batch norm's "
                      "multiply-add per element), not FLOPs (2 per MAC) and not at the 664x388 frames (about 5x more); "
                      "our reports give MACs at our input and 'MACs @224x224x3 (paper convention)'.")
    notes["resnet8-flops"] = ("Table 4's 1.42G for ResNet8 is twice the 0.709 G multiply-accumulates of our ResNet8 at "
                              "224x224x3, i.e. FLOPs (2 per MAC), while Table 1's 3.67G is ResNet34's MACs: if the paper's "
                              "ResNet8 has our widths (64/128/256, our reading of Appendix C, which gives none), Tables 1-2 "
                              "and Table 4 count differently (checked in tests/test_paper.py).")
    pruned = []
    for table, arch in ((2, "resnet34"), (4, "resnet8"), (2, "fasterrcnn_resnet34"), (4, "fasterrcnn_resnet10")):
        task = BOUNDS if arch.startswith("faster") else PLANE
        dense = paper_figure(table, arch, task, "flops").number()
        ratios = [f"{paper_figure(table, arch, task, 'flops', p).number() / dense:.3f}" for p in PRUNES[1:]]
        pruned.append(f"{ARCH_LABEL[arch]} {'/'.join(ratios)}")
    notes["pruned-flops"] = ("Tables 2 and 4: pruned FLOPs / dense FLOPs at 30/50/70 % pruning: " + "; ".join(pruned)
                             + ", i.e. about (1 - pruned fraction): counted as dense FLOPs times the kept weights.")
    quarter = []
    for table, arch in ((2, "resnet34"), (4, "resnet8")):
        gaps = [paper_figure(table, arch, PLANE, "memory_mb", p).number() / 4
                - paper_figure(table, arch, PLANE, "memory_mb", p, "int8").number() for p in PRUNES]
        quarter.append(f"{ARCH_LABEL[arch]}: {'yes' if all(0 <= g < 0.01 for g in gaps) else 'no'}")
    notes["int8-memory"] = ("Tables 2 and 4: classifier INT8 memory = FP32 memory / 4 at every pruning level ("
                            + "; ".join(quarter) + ", to the printed 2 decimals): pruned weights still counted as stored.")
    above = sorted((f for f in FIGURES if f.metric == "f1" and f.table in (1, 2, 4)
                    and 100 * f.number() > paper_figure(f.table, f.arch, f.task, "accuracy", f.prune, f.precision).number()),
                   key=lambda f: paper_figure(f.table, f.arch, f.task, "accuracy", f.prune, f.precision).number() - 100 * f.number())
    above = [f"Table {f.table} {f.arch} {f.task} {f.precision.upper()} {f.prune:.0%}: F1 {f.value} vs accuracy "
             f"{paper_value(f.table, f.arch, f.task, 'accuracy', f.prune, f.precision)} %"
             for f in above]
    notes["f1-above-accuracy"] = (f"F1 above accuracy in {len(above)} cells of Tables 1, 2 and 4, the largest gaps: " + "; ".join(above[:3])
                                  + ". Possible only for a macro average whose errors fall in large classes; the "
                                  "paper does not say which average it uses.")
    counts = {t: sum(int(f.value.replace(",", "")) for f in figures(table=3, task=t)) for t in schema.CONFIGS}
    notes["table3-orientation"] = (f"Table 3: orientation counts sum to {counts[ORIENTATION]:,}, the whole dataset "
                                   f"(15,728 images), although its caption says not all images are labelled and the "
                                   f"plane frames ({counts[PLANE]:,}) come from Protocol-I, not the oriented Protocol-II scans.")
    notes["weight-change"] = ("Section 4.4 aggregates squared weight changes 'like sum of squared errors' to 2.01e-7 "
                              "(FPUS23) and 3.02e-6 (ImageNet). Our estimate, not the paper's: one Adam step at 0.001 moves "
                              "each weight with a gradient by about 0.001, so a sum over ResNet34's 21.8 M weights after a "
                              "single step is of order 10, far above both printed figures; the paper does not say how it "
                              "scaled them. We report both the sum and the mean per weight.")
    notes["bounds-split"] = ("Appendix A: the bounds data is split 80/20 into training and validation, with no test "
                             "set: the detector's figures are validation figures. Classifiers: 8:1:1.")
    return notes


FOOTNOTES: dict[str, str] = _footnotes()
TABLE_FOOTNOTES = {TEXT: ["weight-change"], 1: ["flops", "f1-above-accuracy", "appendix-b", "bounds-split"],
                   2: ["pruned-flops", "int8-memory", "f1-above-accuracy"],
                   3: ["table3-orientation"],
                   4: ["resnet8-flops", "pruned-flops", "int8-memory", "f1-above-accuracy"],
                   5: ["table5-single-class", "table5-total"],
                   6: ["table6-diagonal", "epochs"], 7: ["table7-diagonal", "epochs", "scheduler"]}

_TASK_TITLE = {PLANE: "Diagnostic Planes", ORIENTATION: "Fetus Orientation", ANATOMY: "Fetus Anatomy",
               BOUNDS: "Anatomy Bounds"}
_METRIC_TITLE = {"accuracy": "Accuracy", "f1": "F1-Score", "mAP": "mAP", "mAR": "mAR", "flops": "No. of Flops",
                 "memory_mb": "Memory (MB)"}


def _cell(table: int, arch: str, task: str, metric: str, prune: float = 0.0, precision: str = "fp32", init=None) -> str:
    figure = paper_figure(table, arch, task, metric, prune, precision, init)
    return figure.printed if figure else ""


def footnote_lines(table: int) -> list[str]:
    """Markdown footnote lines for one table (empty list if none)."""
    return [f"- [{key}] {FOOTNOTES[key]}" for key in TABLE_FOOTNOTES.get(table, [])]


def table1_markdown() -> str:
    rows = ["| Table 1 (ResNet34) | Accuracy | F1-Score | No. of Flops | Memory (MB) |", "|---|---|---|---|---|"]
    for task in CLASSIFIER_TASKS:
        rows.append(f"| {_TASK_TITLE[task]} | {_cell(1, 'resnet34', task, 'accuracy')} | {_cell(1, 'resnet34', task, 'f1')} | "
                    f"{_cell(1, 'resnet34', task, 'flops')} | {_cell(1, 'resnet34', task, 'memory_mb')} |")
    a = "fasterrcnn_resnet34"
    rows.append(f"| {_TASK_TITLE[BOUNDS]} | mAP {_cell(1, a, BOUNDS, 'mAP')} | mAR {_cell(1, a, BOUNDS, 'mAR')} | "
                f"{_cell(1, a, BOUNDS, 'flops')} | {_cell(1, a, BOUNDS, 'memory_mb')} |")
    return "\n".join(rows)


def compression_markdown(table: int) -> str:
    """Table 2 or 4 in its layout: columns pruning x precision, row groups per task."""
    classifier, detector = ("resnet34", "fasterrcnn_resnet34") if table == 2 else ("resnet8", "fasterrcnn_resnet10")
    columns = [(p, q) for p in PRUNES for q in PRECISIONS]
    head = "| " + f"Table {table} ({ARCH_LABEL[classifier]}; detector {ARCH_LABEL[detector]})" + " | " + " | ".join(
        f"{p:.0%} {q.upper()}" for p, q in columns) + " |"
    rows = [head, "|---" * (len(columns) + 1) + "|"]

    def line(title: str, arch: str, task: str, metric: str) -> str:
        return f"| {title} | " + " | ".join(_cell(table, arch, task, metric, p, q) for p, q in columns) + " |"

    rows += [line("No. of Flops", classifier, PLANE, "flops"), line("Memory (MB)", classifier, PLANE, "memory_mb")]
    for task in CLASSIFIER_TASKS:
        rows += [f"| **{_TASK_TITLE[task]}** |" + " |" * len(columns)]
        rows += [line(_METRIC_TITLE[m], classifier, task, m) for m in ("accuracy", "f1")]
    rows += [f"| **{_TASK_TITLE[BOUNDS]} - {ARCH_LABEL[detector]}** |" + " |" * len(columns)]
    rows += [line(_METRIC_TITLE[m], detector, BOUNDS, m) for m in ("mAP", "mAR", "flops", "memory_mb")]
    return "\n".join(rows)


def table3_markdown() -> str:
    rows = ["| Table 3 | class counts |", "|---|---|"]
    for task in (PLANE, ORIENTATION, ANATOMY, BOUNDS):
        cells = ", ".join(f"{f.metric.split(':', 1)[1]} {f.value}" for f in figures(table=3, task=task))
        rows.append(f"| {_TASK_TITLE[task]} | {cells} |")
    return "\n".join(rows)


def table5_markdown() -> str:
    rows = ["| Table 5 (no fine-tuning) | ImageNet-trained | FPUS23-trained |", "|---|---|---|"]
    for metric, title in (("errors", "Number of Errors"), ("total", "Total Number of Images"),
                          ("accuracy", "Accuracy Percentage")):
        rows.append(f"| {title} | {paper_value(5, 'resnet34', PLANE, metric, init='imagenet')} | "
                    f"{paper_value(5, 'resnet34', PLANE, metric, init='fpus23')} |")
    return "\n".join(rows)


def confusion_markdown(table: int, matrix: list[list[int]] | None = None, accuracies: list[str] | None = None,
                       title: str | None = None) -> str:
    """Tables 6-7 layout: rows = prediction, columns = ground truth, last row per-class accuracy %.

    Without `matrix`, the paper's Table `table`; with it, ours in the same layout (accuracies computed
    from the matrix unless given).
    """
    init, epochs, paper_matrix, paper_accs = CONFUSION.get(table, (None, None, None, None))
    matrix = paper_matrix if matrix is None else matrix
    if accuracies is None:
        if matrix is paper_matrix:
            accuracies = paper_accs
        else:
            columns = [sum(row[k] for row in matrix) for k in range(len(DB_CLASSES))]
            accuracies = [_pct(matrix[k][k], n) if n else "n/a" for k, n in enumerate(columns)]
    title = title or f"Table {table} ({init}-trained, fine-tuned {epochs} epoch{'s' if epochs > 1 else ''})"
    names = [c.replace("Fetal ", "").capitalize() for c in DB_CLASSES]
    rows = [f"| {title}: prediction \\ ground truth | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    rows += [f"| {name} | " + " | ".join(map(str, row)) + " |" for name, row in zip(names, matrix)]
    rows.append("| Accuracy | " + " | ".join(accuracies) + " |")
    return "\n".join(rows)


def paper_tables_markdown() -> str:
    """Every table of the paper in its layout, with the footnotes: a report appendix."""
    parts = ["# The paper's tables (Prabakaran et al., IEEE Access 2023), as printed", ""]
    blocks = [(1, table1_markdown()), (2, compression_markdown(2)), (3, table3_markdown()), (4, compression_markdown(4)),
              (5, table5_markdown()), (6, confusion_markdown(6)), (7, confusion_markdown(7))]
    for table, text in blocks:
        parts += [text, ""] + footnote_lines(table) + [""]
    parts += ["Text figures: " + "; ".join(f"{f.note}: {f.metric} ({f.init}) {f.printed}" for f in figures(table=TEXT)), ""]
    parts += footnote_lines(TEXT) + [""]
    return "\n".join(parts)
