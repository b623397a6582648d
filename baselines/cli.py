"""`fpus23-baselines ...`: train, report, export, quickstart."""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

from fpus23_dataset import schema
from fpus23_dataset.cli import HelpFormatter


def _train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(
        task=args.task, arch=args.arch, protocol=args.protocol, data=str(args.data), out=args.out, init=args.init,
        recipe_set=args.recipe, flip=args.flip, fpn=args.fpn, box_representation=args.box_representation,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, max_steps=args.max_steps,
        subset=args.subset, eval_subset=args.eval_subset, image_scale=args.image_scale, proposals=args.proposals,
        workers=args.workers, latency_runs=args.latency_runs,
        device=args.device, amp=not args.no_amp, resume=args.resume, progress=not args.quiet,
    )
    summary = train(config)
    if config.init_note:
        print(f"note: {config.init_note}", file=sys.stderr)
    if summary:
        print(json.dumps({k: summary[k] for k in ("task", "arch", "protocol", "evaluation_split", "train_seconds")}))
        print(_headline(summary))
        print(f"run folder: {config.out}")
    return 0


def _headline(summary: dict) -> str:
    m = summary["metrics"]
    if summary["task"] == "bounds":
        return f"mAP@[.5:.95] {m['mAP']:.3f}  mAP@.5 {m['mAP50']:.3f}  mAR@100 {m['mAR100']:.3f}"
    return f"accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}  ({m['samples']} frames)"


def _compress(args) -> int:
    from .compress import CompressConfig, compress

    summary = compress(CompressConfig(
        run=args.run, out=args.out, prune=args.prune, int8=args.int8, data=args.data, epochs=args.epochs,
        max_steps=args.max_steps, lr_scale=args.lr_scale, batch_size=args.batch_size, eval_subset=args.eval_subset,
        seed=args.seed, workers=args.workers, latency_runs=args.latency_runs, progress=not args.quiet))
    c = summary["compression"]
    print(f"pruned {c['prune']:.0%}: sparsity {c['sparsity']:.1%}, MACs {c['dense_macs_g']} G dense / "
          f"{c['effective_macs_g']} G effective")
    print(f"parent  {_headline({'task': summary['task'], 'metrics': c['parent']['metrics']})}")
    print(f"FP32    {_headline({'task': summary['task'], 'metrics': c['fp32']['metrics']})}  "
          f"{c['fp32']['memory_dense_mb']} MB dense, {c['fp32']['memory_sparse_mb']} MB sparse, {c['fp32']['cpu_latency_ms']} ms")
    if c["int8"]:
        print(f"INT8    {_headline({'task': summary['task'], 'metrics': c['int8']['metrics']})}  "
              f"{c['int8']['memory_dense_mb']} MB dense, {c['int8']['memory_sparse_mb']} MB sparse, {c['int8']['cpu_latency_ms']} ms")
    print(f"run folder: {summary['config']['out']}")
    return 0


def _transfer(args) -> int:
    from .transfer import TransferConfig, run_transfer

    run_transfer(TransferConfig(
        db=args.db, fpus23_run=args.fpus23_run, out=args.out, inits=tuple(args.inits), epochs=args.epochs,
        target_accuracy=args.target, subset=None if args.subset == 0 else args.subset, lr=args.lr,
        batch_size=args.batch_size, max_steps=args.max_steps, validation_fraction=args.validation_fraction,
        recalibrate_bn=not args.no_bn_recalibration, seed=args.seed, progress=not args.quiet))
    print((Path(args.out) / "transfer.md").read_text())
    return 0


def _standin(args) -> int:
    from .fetal_planes import make_standin, read_fetal_planes

    root = make_standin(args.out, patients=args.patients, images_per_class=args.images_per_class, seed=args.seed,
                        progress=not args.quiet)
    print(f"FETAL_PLANES_DB stand-in written: {root} {read_fetal_planes(root).counts()}")
    return 0


def _report(args) -> int:
    from .report import compression_tables, load_runs, table1

    runs = load_runs(args.runs)
    plain = [r for r in runs if "compression" not in r]
    text = (table1(plain) if plain else "") + compression_tables(runs)
    if args.out:
        Path(args.out).write_text(text)
    print(text)
    return 0


def _export(args) -> int:
    from .bundle import export_run

    out = export_run(args.run, args.out, fp32=args.fp32, force=args.force)
    print(f"bundle written: {out}")
    return 0


def _quickstart(args) -> int:
    """Train one small model per task on procedural recordings and export `out/<task>` bundles."""
    import time

    from .quickstart import quickstart

    started = time.perf_counter()
    summaries = quickstart(args.out, args.data, args.tasks, args.seed, progress=not args.quiet)
    for task, summary in summaries.items():
        print(f"{task}: {summary['arch']} — {_headline(summary)} on its synthetic {summary['evaluation_split']} split "
              f"(trained {summary['train_seconds']} s) -> {Path(args.out) / task}")
    print(f"bundles in {args.out} after {time.perf_counter() - started:.0f} s: demo-quality models trained for minutes on "
          f"procedural recordings; not research numbers (see fpus23-baselines reproduce)")
    return 0


def _reproduce(args) -> int:
    from .reproduce import ReproduceConfig, reproduce

    report = reproduce(ReproduceConfig(data=str(args.data), out=args.out, quick=args.quick, seeds=args.seeds,
                                       tasks=tuple(args.tasks), bootstrap=args.bootstrap, fetal_planes=args.fetal_planes,
                                       workers=args.workers, progress=not args.quiet,
                                       shorten={"epochs": args.epochs, "max_steps": args.max_steps, "subset": args.subset,
                                                "eval_subset": args.eval_subset}, families=args.family,
                                       compression=not args.no_compression))
    if report is not None:  # None on torchrun's ranks other than 0
        print(f"report: {report}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fpus23-baselines", description="The FPUS23 paper's baselines",
                                formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"fpus23-baselines {version('fpus23')}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("train", help="train and evaluate one model")
    s.add_argument("--task", required=True, choices=schema.TASKS)
    s.add_argument("--arch", help="resnet34 | resnet10 | resnet8 | fasterrcnn_resnet34 | fasterrcnn_resnet10")
    s.add_argument("--protocol", choices=["stream", "paper"], default="stream",
                   help="stream: whole recordings held out; paper: random per-frame splits")
    s.add_argument("--data", type=Path, default=Path("fpus23"), help="built dataset folder")
    s.add_argument("--out", help="run folder (default runs/<task>-<arch>-<protocol>)")
    s.add_argument("--recipe", choices=["ours", "paper"], default="ours",
                   help="paper: the paper's stated recipe (Adam 1e-3, 15 epochs, ImageNet init when provided, flipped "
                        "copies, balanced planes, full frames); ours: this project's defaults (see baselines/train.py)")
    s.add_argument("--init", choices=["scratch", "imagenet"],
                   help="initialisation (default: the recipe's); imagenet: ResNet34 weights from the local torch hub cache")
    s.add_argument("--flip", choices=["random", "copies", "none"], help="training flips (default: the recipe's)")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float)
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--max-steps", type=int, help="batches per epoch at most (quick runs)")
    s.add_argument("--subset", type=float, help="training rows: a fraction (<=1) or a count")
    s.add_argument("--eval-subset", type=float, help="evaluation rows: a fraction (<=1) or a count")
    s.add_argument("--image-scale", type=float, help="input size as a fraction of 672x389 (default: per architecture)")
    s.add_argument("--fpn", action=argparse.BooleanOptionalAction,
                   help="detector: pool regions from a feature pyramid over the trunk's stages 2-4 (small anatomies); "
                        "default: the recipe's (ours: yes, paper: no)")
    s.add_argument("--box-representation", type=int, help="detector: box head width (default: torchvision's 1024)")
    s.add_argument("--proposals", type=int, help="detector: RPN proposals kept (default: torchvision's 2000/1000)")
    s.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    s.add_argument("--device", default="auto", help="torch device; auto: CUDA if available, else CPU")
    s.add_argument("--no-amp", action="store_true", help="no mixed precision on CUDA")
    s.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    s.add_argument("--latency-runs", type=int, default=20, help="CPU latency measurement: forward passes timed")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_train)

    s = sub.add_parser("compress", help="prune and/or quantise a trained run (Tables 2 and 4)")
    s.add_argument("run", help="run folder written by train")
    s.add_argument("--prune", type=float, default=0.0, help="fraction of conv/linear weights to remove (e.g. 0.3, 0.5, 0.7)")
    s.add_argument("--int8", action="store_true", help="quantisation-aware training to INT8 (torchao PT2E, x86)")
    s.add_argument("--out", help="output run folder (default <run>-prune<P>[-int8])")
    s.add_argument("--data", help="built dataset folder (default: the run's)")
    s.add_argument("--epochs", type=int, default=1, help="retraining epochs after pruning, and QAT epochs")
    s.add_argument("--max-steps", type=int, help="batches per epoch at most")
    s.add_argument("--lr-scale", type=float, default=0.1, help="fine-tuning lr = the run's lr x this")
    s.add_argument("--batch-size", type=int)
    s.add_argument("--eval-subset", type=float, help="evaluation rows: a fraction (<=1) or a count")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    s.add_argument("--latency-runs", type=int, default=20, help="CPU latency measurement: forward passes timed")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_compress)

    s = sub.add_parser("transfer", help="phantom -> FETAL_PLANES_DB transfer experiments (Tables 5-7)")
    s.add_argument("--db", required=True, help="FETAL_PLANES_DB folder (FETAL_PLANES_DB_data.csv + Images/)")
    s.add_argument("--fpus23-run", required=True, help="an FPUS23 plane classifier run folder")
    s.add_argument("--out", default="runs/transfer", help="output folder (replaced if it holds an earlier transfer)")
    s.add_argument("--inits", nargs="+", default=["fpus23", "imagenet", "scratch"], choices=["fpus23", "imagenet", "scratch"],
                   help="initialisations to fine-tune from (scratch: our reference, not in the paper)")
    s.add_argument("--epochs", type=int, default=15,
                   help="fine-tuning epochs (ours; Appendix D: 15, Tables 6-7 show epochs 5 and 1)")
    s.add_argument("--target", type=float, default=0.9, help="accuracy whose first epoch is reported")
    s.add_argument("--subset", type=float, default=0.4, help="subset experiment's fraction of training images (0: skip)")
    s.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (section 4.1: 0.001)")
    s.add_argument("--batch-size", type=int, default=16, help="batch size (ours; the paper gives none)")
    s.add_argument("--max-steps", type=int, help="batches per epoch at most (quick runs)")
    s.add_argument("--validation-fraction", type=float, default=0.2,
                   help="training patients held out to choose the reported epoch (0: none, the last epoch is reported)")
    s.add_argument("--no-bn-recalibration", action="store_true",
                   help="evaluate with batch-norm running statistics as trained (default: re-estimated on the training images)")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_transfer)

    s = sub.add_parser("fetal-planes-standin", help="write a FETAL_PLANES_DB-shaped stand-in (phantom renderer, other machine)")
    s.add_argument("out", help="folder to write the stand-in database into")
    s.add_argument("--patients", type=int, default=24, help="patients (about a third are test patients)")
    s.add_argument("--images-per-class", type=int, default=4, help="images per patient and class")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_standin)

    s = sub.add_parser("report", help="Markdown tables shaped like the paper's Table 1 (and Tables 2/4 for compressed runs)")
    s.add_argument("runs", nargs="+", help="run folders written by train or compress")
    s.add_argument("--out", help="also write the Markdown here")
    s.set_defaults(func=_report)

    s = sub.add_parser("reproduce", help="regenerate every table (Tables 1, 2, 4-7) for both protocols, with seeds, "
                                          "stream-bootstrap intervals and the leakage gap, as one Markdown report")
    s.add_argument("--data", type=Path, default=Path("fpus23"), help="built dataset folder")
    s.add_argument("--out", default="runs/reproduce", help="output folder (runs/, report.md, summary.json); "
                                                           "finished runs in it are reused")
    s.add_argument("--quick", action="store_true", help="CPU minutes: searched networks, small inputs, few steps, a subset")
    s.add_argument("--seeds", type=int, default=3, help="training seeds per task and protocol")
    s.add_argument("--tasks", nargs="+", default=list(schema.CONFIGS), choices=schema.CONFIGS, help="configs to reproduce")
    s.add_argument("--bootstrap", type=int, default=1000, help="stream-bootstrap draws (the detector uses a tenth)")
    s.add_argument("--fetal-planes", help="FETAL_PLANES_DB folder for Tables 5-7 (default: a labelled stand-in)")
    s.add_argument("--family", action="append", choices=["resnet34", "resnet8"],
                   help="only this model family (resnet34: Table 1's; resnet8: Table 4's searched networks); repeatable")
    s.add_argument("--no-compression", action="store_true",
                   help="skip Tables 2/4's pruned and INT8 models (CPU work; e.g. on a GPU machine short of time)")
    s.add_argument("--epochs", type=int, help="shorten every run to this many epochs (the report says so)")
    s.add_argument("--max-steps", type=int, help="shorten every epoch to this many batches (the report says so)")
    s.add_argument("--subset", type=float, help="training rows per run: a fraction (<=1) or a count (the report says so)")
    s.add_argument("--eval-subset", type=float, help="evaluation rows per run: a fraction (<=1) or a count")
    s.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_reproduce)

    s = sub.add_parser("export", help="write a model bundle from a run folder")
    s.add_argument("run", help="run folder written by train or compress")
    s.add_argument("out", help="bundle folder to write")
    s.add_argument("--fp32", action="store_true", help="from an INT8 compressed run: export its FP32 twin instead")
    s.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    s.set_defaults(func=_export)

    s = sub.add_parser("quickstart", help="small models for every task (the four configs and the probe) on procedural recordings")
    s.add_argument("out", help="folder for the bundles (<out>/<task>), their runs and the training set")
    s.add_argument("--data", help="train on this built dataset instead of rendering the quickstart's procedural set")
    s.add_argument("--tasks", nargs="+", default=list(schema.TASKS), choices=schema.TASKS, help="tasks to train")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_quickstart)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    from fpus23_dataset.errors import UserError

    from .bundle import BundleError
    from .models import InitError

    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, BundleError, InitError, FileNotFoundError) as error:  # a user's mistake: one line, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
