"""The `geodet` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence

from geodet import __version__
from geodet.errors import GeodetError, InputError


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2, like InputError
        self.print_usage(sys.stderr)
        self.exit(2, f"geodet: error: {message}\n")


def _bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"bands must be like 1,2,3, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="geodet", description="Object detection over huge georeferenced "
                     "rasters with ONNX models, on Ray.")
    parser.add_argument("--version", action="version", version=f"geodet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("detect", help="detect objects in rasters, write a GeoPackage",
                       description="Detect objects in one or more georeferenced rasters "
                       "and write them to a GeoPackage.")
    d.add_argument("scenes", nargs="+", metavar="SCENE", help="raster path or GDAL URL, "
                   "a glob pattern such as 'mosaics/*.tif' (quoted), or a .txt file "
                   "listing paths or URLs, one a line")
    d.add_argument("--model", required=True, help="ONNX detector (.onnx)")
    d.add_argument("--out", required=True, help="output GeoPackage (.gpkg)")
    d.add_argument("--tile-size", type=int, help="tile side in scene pixels, resampled "
                   "to the model's input (default: the model's input size, or the tile "
                   "that gives the model its ground resolution)")
    d.add_argument("--gsd", type=float, help="ground resolution the model was trained at, "
                   "metres per pixel: tiles are resampled on the fly so the model sees it "
                   "(default: the model's metadata, else the scene's own resolution)")
    d.add_argument("--overlap", type=float, help="overlap of neighbouring tiles, "
                   "fraction of the tile (default: model metadata, else 0.2)")
    d.add_argument("--conf", type=float, help="minimum score (default: model metadata, "
                   "else 0.25)")
    d.add_argument("--iou", type=float, help="IoU above which overlapping boxes are "
                   "duplicates (default: model metadata, else 0.5)")
    d.add_argument("--merge", choices=["ownership", "nms", "nmm"], default="ownership",
                   help="how duplicates across tile overlaps are resolved: ownership "
                   "(default: each tile keeps objects centred in its core, then a seam "
                   "pass), nms (global IoU suppression), nmm (merge on "
                   "intersection-over-smaller, as SAHI)")
    d.add_argument("--ios", type=float, default=0.5,
                   help="intersection-over-smaller above which seam pieces (ownership) or "
                   "boxes (nmm) are merged (default 0.5)")
    d.add_argument("--class-agnostic", action="store_true",
                   help="boxes of different classes may suppress each other")
    d.add_argument("--batch-size", type=int, default=8, help="tiles per inference batch")
    d.add_argument("--workers", type=int, help="number of detector actors (default: one "
                   "per GPU, or one per 4 CPU cores)")
    d.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="auto: GPUs where the cluster has them, else CPU")
    d.add_argument("--bands", type=_bands, help="bands fed to the model, e.g. 1,2,3 "
                   "(default: all but alpha)")
    d.add_argument("--layout", help="model output layout, when it is not detected")
    d.add_argument("--overwrite", action="store_true", help="replace an existing output")
    d.add_argument("--resume", action="store_true", help="continue an interrupted run of "
                   "the same command from its progress file (OUT.gpkg.progress)")
    d.add_argument("--out-crs", help="reproject all detections to this CRS (e.g. "
                   "EPSG:4326); default: each scene's own, one layer per CRS if they differ")
    d.add_argument("--address", help="Ray cluster to join ('auto' or host:port); "
                   "default: RAY_ADDRESS if set, else a private local cluster")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")

    i = sub.add_parser("model-info", help="show what geodet reads from a model",
                       description="Inputs, outputs, detected layout, classes, ground "
                       "resolution and thresholds of an ONNX model, and where each came "
                       "from.")
    i.add_argument("model", help="ONNX model (.onnx)")

    e = sub.add_parser("eval", help="score detections against ground truth",
                       description="Precision, recall, F1 and duplicate rate per class of "
                       "a geodet output against labelled truth (greedy matching by score), "
                       "and recall of objects crossing tile seams vs the rest.")
    e.add_argument("detections", help="a GeoPackage written by geodet detect")
    e.add_argument("truth", help="vector file of true objects with a class_name column")
    e.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default 0.5)")
    e.add_argument("--truth-layer", help="layer of the truth file (default: the first)")

    m = sub.add_parser("demo", help="generate a sample scene and detect on it",
                       description="Generate a sample scene with known objects, run the "
                       "full pipeline on it with the bundled model, and score the result.")
    m.add_argument("--out", default="geodet-demo", help="folder for the outputs "
                   "(default ./geodet-demo)")
    m.add_argument("--size", type=int, default=4096, help="scene side in pixels")
    m.add_argument("--seed", type=int, default=0, help="random seed of the scene")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _detect(args: argparse.Namespace) -> int:
    from geodet.api import detect

    result = detect(
        args.scenes, args.model, args.out, tile_size=args.tile_size, gsd=args.gsd,
        overlap=args.overlap,
        conf=args.conf, iou=args.iou, merge=args.merge, ios=args.ios,
        class_agnostic=args.class_agnostic, batch_size=args.batch_size,
        workers=args.workers, device=args.device,
        bands=args.bands, layout=args.layout, overwrite=args.overwrite,
        out_crs=args.out_crs, resume=args.resume, address=args.address,
        progress=not args.no_progress)
    run = result.attrs["geodet"]
    print(f"{run['detections']} detections in {run['tiles_done']} tiles "
          f"({run['tiles_empty']} empty, {run['tiles_failed']} failed) on "
          f"{', '.join(json.loads(run['execution_providers']))} in "
          f"{run['seconds_total']:.1f} s -> {args.out}")
    if run["tiles_failed"]:
        print(f"geodet: warning: {run['tiles_failed']} tiles failed; see the 'tiles' "
              f"layer of {args.out} for the reasons", file=sys.stderr)
        return 3
    return 0


def _model_info(args: argparse.Namespace) -> int:
    from geodet.decode import detect_layout
    from geodet.model import describe, inspect_model

    info = inspect_model(args.model)
    try:
        print(describe(info, detect_layout(info)))
    except InputError as e:
        print(describe(info, None, f"unknown: {e}"))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from geodet.evaluate import evaluate_files, format_report

    report = evaluate_files(args.detections, args.truth, iou=args.iou,
                            truth_layer=args.truth_layer)
    print(format_report(report))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from geodet.demo import run_demo

    return run_demo(args.out, size=args.size, seed=args.seed, progress=not args.no_progress)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="geodet: %(levelname)s: %(message)s")
    try:
        commands = {"detect": _detect, "model-info": _model_info, "eval": _eval,
                    "demo": _demo}
        return commands[args.command](args)
    except InputError as e:
        print(f"geodet: error: {e}", file=sys.stderr)
        return e.exit_code
    except GeodetError as e:
        print(f"geodet: failed: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("geodet: interrupted", file=sys.stderr)
        return 130
