"""`fpus23-baselines ...`: train, report, export, quickstart."""
from __future__ import annotations

import argparse
import json
import sys
from importlib.metadata import version
from pathlib import Path

from fpus23_dataset import schema
from fpus23_dataset.cli import HelpFormatter

QUICKSTART = {
    # task: (arch, image scale, epochs, max steps per epoch, batch size, lr, detector proposals)
    "orientation": ("resnet8", 0.35, 4, 30, 16, 1e-3, None),
    "anatomy": ("resnet8", 0.35, 4, 30, 16, 1e-3, None),
    "plane": ("resnet8", 0.35, 4, 30, 16, 1e-3, None),
    "probe": ("resnet8", 0.35, 2, 20, 16, 1e-3, None),
    "bounds": ("fasterrcnn_resnet10", 0.5, 3, 40, 4, 0.01, 100),
}


def _train(args) -> int:
    from .train import TrainConfig, train

    config = TrainConfig(
        task=args.task, arch=args.arch, protocol=args.protocol, data=str(args.data), out=args.out, init=args.init,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed, max_steps=args.max_steps,
        subset=args.subset, eval_subset=args.eval_subset, image_scale=args.image_scale, proposals=args.proposals,
        workers=args.workers, latency_runs=args.latency_runs,
        device=args.device, amp=not args.no_amp, resume=args.resume, progress=not args.quiet,
    )
    summary = train(config)
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
    from .bundle import INT8_STATE, BundleError, export_bundle
    from .train import load_run

    out = Path(args.out)
    # an existing bundle is replaced only when asked; callers inside this CLI (quickstart) pass no flag and replace their own
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not getattr(args, "force", True):
        print(f"error: {out} exists; pass --force to replace it", file=sys.stderr)
        return 1
    run_dir = Path(args.run)
    run, model, spec = load_run(run_dir)
    options = run.get("model_options", {})
    int8 = run.get("precision") == "int8" and not args.fp32
    extra = {"cost": run.get("cost"), "evaluation_split": run["evaluation_split"], "recipe": run["recipe"],
             "thresholds": run.get("thresholds", {}), "thresholds_chosen_on": run.get("thresholds_chosen_on")}
    if "compression" in run:
        c = run["compression"]
        extra["compression"] = {"prune": c["prune"], "sparsity": c["sparsity"], "dense_macs_g": c["dense_macs_g"],
                                "effective_macs_g": c["effective_macs_g"],
                                "fp32": {k: v for k, v in c["fp32"].items() if k != "metrics"},
                                "int8": c["int8"] and {k: v for k, v in c["int8"].items() if k != "metrics"}}
    metrics = run["metrics"] if int8 or "compression" not in run else run["compression"]["fp32"]["metrics"]
    try:
        out = export_bundle(model, out, task=run["task"], arch=run["arch"], spec=spec, dataset=run["dataset"],
                            protocol=run["protocol"], metrics=metrics, model_options=options, extra=extra,
                            int8_state=run_dir / INT8_STATE if int8 else None)
    except BundleError as error:  # --force onto a folder that is not a bundle: refused, one line
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"bundle written: {out}")
    return 0


def _quickstart(args) -> int:
    """Build the embedded synthetic dataset if needed, train four small models, export four bundles."""
    from fpus23_dataset.build import build

    from .train import TrainConfig, train

    out = Path(args.out)
    data = Path(args.data)
    if not (data / "README.md").is_file():
        print(f"building the embedded synthetic dataset into {data} ...")
        build(None, data, "0.1.0", progress=not args.quiet)
    for task in args.tasks:
        arch, scale, epochs, steps, batch, lr, proposals = QUICKSTART[task]
        run_dir = out / "runs" / task
        config = TrainConfig(task=task, arch=arch, data=str(data), out=str(run_dir), epochs=epochs, max_steps=steps,
                             batch_size=batch, lr=lr, image_scale=scale, proposals=proposals, seed=args.seed,
                             progress=not args.quiet, latency_runs=5)
        summary = train(config)
        print(f"{task}: {arch} at {scale}x — {_headline(summary)} in {summary['train_seconds']} s")
        _export(argparse.Namespace(run=str(run_dir), out=str(out / f"{task}-{arch}"), fp32=False))
    print(f"bundles in {out}: demo-quality models trained for minutes on synthetic frames; not for research numbers")
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
    s.add_argument("--init", choices=["scratch", "imagenet"], default="scratch",
                   help="imagenet: ResNet34 weights from the local torch hub cache")
    s.add_argument("--epochs", type=int)
    s.add_argument("--batch-size", type=int)
    s.add_argument("--lr", type=float)
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--max-steps", type=int, help="batches per epoch at most (quick runs)")
    s.add_argument("--subset", type=float, help="training rows: a fraction (<=1) or a count")
    s.add_argument("--eval-subset", type=float, help="evaluation rows: a fraction (<=1) or a count")
    s.add_argument("--image-scale", type=float, help="input size as a fraction of 672x389 (default: per architecture)")
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

    s = sub.add_parser("export", help="write a model bundle from a run folder")
    s.add_argument("run", help="run folder written by train or compress")
    s.add_argument("out", help="bundle folder to write")
    s.add_argument("--fp32", action="store_true", help="from an INT8 compressed run: export its FP32 twin instead")
    s.add_argument("--force", action="store_true", help="replace an existing bundle folder")
    s.set_defaults(func=_export)

    s = sub.add_parser("quickstart", help="small models for every task (the four configs and the probe) on the embedded synthetic set")
    s.add_argument("out", help="folder for the runs and bundles")
    s.add_argument("--data", default="fpus23", help="built dataset folder (built from the embedded set if absent)")
    s.add_argument("--tasks", nargs="+", default=list(QUICKSTART), choices=list(QUICKSTART), help="tasks to train")
    s.add_argument("--seed", type=int, default=0, help="random seed")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_quickstart)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
