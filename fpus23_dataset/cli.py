"""`fpus23 ...`: thin argument parsing over the library functions."""
from __future__ import annotations

import argparse
import json
import sys
import time
from importlib.metadata import version
from pathlib import Path

from . import schema
from .errors import UserError


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):  # --help shows defaults, but not None/False ones
    def _get_help_string(self, action):
        return action.help if action.default is None or action.default is False else super()._get_help_string(action)


EXTRAS = {"fiftyone": "fiftyone", "torch": "baselines", "torchvision": "baselines", "baselines": "baselines",
          "matplotlib": "dev", "pycocotools": "dev"}


def _validate(args) -> int:
    from .build.validate import validate

    source, report, checked = validate(args.source, deep=args.deep, progress=not args.json)
    if args.json:
        print(json.dumps({"source": source.describe(), **report.to_dict()}, indent=2))
    else:
        print(source.describe(), report.format_text(), sep="\n")
    if not checked:
        print(f"error: {args.source}: nothing usable could be read", file=sys.stderr)
        return 1
    return 0


def _synth(args) -> int:
    from .atomic import replacing_dir
    from .synth import render_annotations, render_procedural

    started = time.perf_counter()
    with replacing_dir(args.out) as out:  # a new folder, whole or not at all: never mixed with an earlier render
        if args.annotations:
            report = render_annotations(args.annotations, out, seed=args.seed, workers=args.workers, streams=args.stream or None)
        else:
            report = render_procedural(out, streams=args.streams, frames_per_stream=args.frames,
                                       plane_images=args.plane_images, seed=args.seed, workers=args.workers)
    seconds, frames = time.perf_counter() - started, report.totals["rendered_frames"]
    print(f"rendered {frames:,} frames into {args.out} in {seconds:.1f} s ({frames / max(seconds, 1e-9):.1f} frames/s)")
    return 0


def _build(args) -> int:
    from .build import build
    from .release.tables import format_counts

    started = time.perf_counter()
    result = build(args.source, args.out, args.version, seed=args.seed, progress=not args.quiet, configs=args.configs,
                   keep_going=args.keep_going, workers=args.workers)
    print(f"built {result.out} (version {result.version}) from {result.frames_read:,} frames in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"source fingerprint {result.fingerprint}")
    if result.report.counts or result.report.excluded or result.report.omitted:
        print(result.report.format_text(max_lines_per_code=3))
    print(format_counts(result.counts))
    return 0


def _stats(args) -> int:
    from .release.tables import class_counts, format_counts, plot_counts

    counts = class_counts(args.path)
    plotted = plot_counts(counts, args.plot) if args.plot else None  # before any output: it may need an extra
    print(format_counts(counts) + (f"\nclass histogram: {plotted}" if plotted else ""))
    return 0


def _diff(args) -> int:
    from .release.diff import diff_builds, format_diff

    print(format_diff(diff_builds(args.old, args.new), limit=args.limit))
    return 0


def _export(args) -> int:
    from .release.export import export_coco

    written = export_coco(args.path, args.out, config=args.config)
    print("\n".join(f"{split}: {path}" for split, path in written.items()))
    return 0


def _publish(args) -> int:
    from .release.publish import publish

    url = publish(args.path, args.repo_id, args.tag, private=args.private)
    print(f"published {args.path} to {args.repo_id} at {args.tag}: {url}")
    return 0


def _fiftyone(args) -> int:
    from .fiftyone import configure

    configure(args.database_dir)  # before FiftyOne is imported anywhere
    from .fiftyone import evaluate, launch, load_into_fiftyone

    predictors = {}
    if args.predictions:
        from baselines.bundle import load_bundle  # the CLI hands models to the data layer
        predictors = {predictor.task: predictor for predictor in map(load_bundle, args.predictions)}
    configs = "all" if args.config == "all" else [args.config]
    dataset = load_into_fiftyone(args.path, configs=configs, name=args.name, cache_dir=args.cache_dir,
                                 predictors=predictors, progress=True)
    print(f"FiftyOne dataset {dataset.name!r}: {len(dataset)} samples")
    if predictors:
        evaluate(dataset, predictors)
    if args.launch:
        launch(dataset, port=args.port)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fpus23", description="FPUS23: CVAT exports -> Hugging Face dataset")
    p.add_argument("--version", action="version", version=f"fpus23 {version('fpus23')}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("validate", help="report what a source holds and what is wrong with it")
    s.add_argument("source", type=Path, help="FPUS23 archive folder, CVAT exports or a rendered synthetic source")
    s.add_argument("--json", action="store_true", help="machine-readable report")
    s.add_argument("--deep", action="store_true", help="read every image fully and verify PNG chunk CRCs")
    s.set_defaults(func=_validate)

    s = sub.add_parser("synth", help="render synthetic phantom frames in the FPUS23 archive layout")
    s.add_argument("out", type=Path, help="new folder for the rendered source (refused if it exists)")
    s.add_argument("--annotations", type=Path, help="render frames for these CVAT exports (keeps geometry and tags)")
    s.add_argument("--stream", action="append", help="with --annotations: only this stream (repeatable)")
    s.add_argument("--streams", type=int, default=16, help="procedural: number of streams")
    s.add_argument("--frames", type=int, default=30, help="procedural: frames per stream")
    s.add_argument("--plane-images", type=int, default=36, help="procedural: images per plane folder")
    s.add_argument("--seed", type=int, default=0, help="rendering seed")
    s.add_argument("--workers", type=int, default=None, help="rendering processes (default: all cores)")
    s.set_defaults(func=_synth)

    s = sub.add_parser("build", help="build the Hugging Face dataset folder")
    s.add_argument("source", type=Path, nargs="?", help="source folder (default: the embedded synthetic set)")
    s.add_argument("--out", type=Path, default=Path("fpus23"), help="dataset folder to write")
    s.add_argument("--version", default="0.1.0", help="dataset version X.Y.Z")
    s.add_argument("--seed", type=int, default=0, help="split seed")
    s.add_argument("--configs", nargs="+", choices=schema.CONFIGS, default=list(schema.CONFIGS), metavar="CONFIG",
                   help="configs to write; their rows, splits and object ids are those of a full build")
    s.add_argument("--keep-going", action="store_true",
                   help="build without the streams whose exports cannot be read whole (recorded in the report and card); "
                        "default: stop, writing nothing")
    s.add_argument("--workers", type=int, default=None, help="processes that read images and write shards (default: all cores)")
    s.add_argument("--quiet", action="store_true", help="no progress bars")
    s.set_defaults(func=_build)

    s = sub.add_parser("stats", help="class counts per config and split")
    s.add_argument("path", type=Path, nargs="?", default=Path("fpus23"), help="built dataset folder")
    s.add_argument("--plot", type=Path, help="also draw the class histograms into this PNG")
    s.set_defaults(func=_stats)

    s = sub.add_parser("diff", help="frames added, removed and relabelled between two builds")
    s.add_argument("old", type=Path, help="the earlier build folder")
    s.add_argument("new", type=Path, help="the later build folder")
    s.add_argument("--limit", type=int, default=10, help="examples listed per change kind")
    s.set_defaults(func=_diff)

    s = sub.add_parser("export", help="export a config to another format")
    s.add_argument("path", type=Path, help="built dataset folder")
    s.add_argument("out", type=Path, help="new folder for the exported files")
    s.add_argument("--config", default=schema.DETECTION_TASK, choices=schema.CONFIGS, help="config to export (COCO: bounds)")
    s.add_argument("--format", choices=["coco"], default="coco", help="output format")
    s.set_defaults(func=_export)

    s = sub.add_parser("fiftyone", help="load a build (and predictions) into FiftyOne; optionally open the App")
    s.add_argument("path", type=Path, help="built dataset folder")
    s.add_argument("--config", default="all", choices=["all", *schema.CONFIGS], help="configs to load")
    s.add_argument("--name", default="fpus23", help="FiftyOne dataset name (reloading the same name updates it)")
    s.add_argument("--predictions", type=Path, nargs="*", help="model bundle folders to run and evaluate")
    s.add_argument("--launch", action="store_true", help="serve the App until Ctrl-C")
    s.add_argument("--port", type=int, default=5151, help="App port")
    s.add_argument("--database-dir", type=Path, help="FiftyOne database folder (default: FiftyOne's own)")
    s.add_argument("--cache-dir", type=Path, help="where images are materialised (default ~/.cache/fpus23)")
    s.set_defaults(func=_fiftyone)

    s = sub.add_parser("publish", help="upload a build to the Hugging Face Hub and tag the release")
    s.add_argument("path", type=Path, help="built dataset folder")
    s.add_argument("--repo-id", required=True, help="Hugging Face dataset repository, owner/name")
    s.add_argument("--tag", required=True, help="e.g. v0.1.0 (must match the build's version)")
    s.add_argument("--private", action="store_true", help="create the repository private")
    s.set_defaults(func=_publish)
    for command in sub.choices.values():
        command.formatter_class = HelpFormatter
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as error:  # a mistake the user can fix: the message says what and how, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 1
    except ModuleNotFoundError as error:  # an optional extra this command needs is not installed
        extra = EXTRAS.get((error.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"error: `fpus23 {args.command}` needs {error.name}: pip install 'fpus23[{extra}]'", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
