"""The `geodet` command: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Literal, get_args, get_origin

from geodet import __version__
from geodet.errors import GeodetError, InputError, PartialRunError, Stopped, one_line
from geodet.options import Options, describe_default


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # usage errors: one line, exit 2, like InputError
        self.print_usage(sys.stderr)
        self.exit(2, f"geodet: error: {message}\n")


def _choices(annotation: object) -> tuple | None:
    """The values of a ``Literal`` annotation, optional or not."""
    for t in (annotation, *get_args(annotation)):
        if get_origin(t) is Literal:
            return get_args(t)
    return None


def add_options(parser: argparse.ArgumentParser) -> None:
    """One flag per field of `Options`, with its declared help and default. Values
    stay strings: pydantic checks them, choices included, so that every bad value is
    one line; flags not given are absent from the result."""
    for name, info in Options.model_fields.items():
        flag = "--" + name.replace("_", "-")
        kwargs: dict = {"dest": name, "default": argparse.SUPPRESS}
        if info.annotation is bool:
            kwargs["action"] = "store_false" if info.default else "store_true"
            flag = flag.replace("--", "--no-") if info.default else flag
            helptext = f"do not {info.description}" if info.default else info.description
        else:
            choices = _choices(info.annotation)
            kwargs["metavar"] = f"{{{','.join(choices)}}}" if choices else name.upper()
            shown = describe_default(info)
            helptext = f"{info.description} (default: {shown})" if shown else info.description
        short = (info.json_schema_extra or {}).get("short")
        parser.add_argument(*filter(None, (short, flag)), help=helptext, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="geodet", description="Object detection over huge georeferenced "
                     "rasters with ONNX models, on Ray.")
    parser.add_argument("--version", action="version", version=f"geodet {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    d = sub.add_parser("detect", help="detect objects in rasters, write a GeoPackage",
                       description="Detect objects in one or more georeferenced rasters "
                       "and write them to a GeoPackage.")
    d.add_argument("scenes", nargs="*", metavar="SCENE", help="raster path or GDAL URL, "
                   "a glob pattern such as 'mosaics/*.tif' (quoted), a .txt file "
                   "listing paths or URLs, one a line, or a STAC item, item collection or "
                   "catalog (.json); replaces the job file's scenes")
    d.add_argument("--model", help="ONNX detector (.onnx): a path, or a URL such as "
                   "s3://bucket/cars.onnx or https://...")
    d.add_argument("--out", help="output GeoPackage (.gpkg): a path, or a URL such as "
                   "s3://bucket/cars.gpkg (uploaded when complete)")
    d.add_argument("--config", metavar="JOB.yaml", help="job file: scenes, model, out and "
                   "options (see configs/); flags given here override it")
    d.add_argument("--dry-run", action="store_true", help="check every input, print the "
                   "plan (scenes, tiles, settings and where each came from), write nothing")
    add_options(d)

    i = sub.add_parser("model-info", help="show what geodet reads from a model",
                       description="Inputs, outputs, detected layout, classes, ground "
                       "resolution and thresholds of an ONNX model, and where each came "
                       "from.")
    i.add_argument("model", help="ONNX model (.onnx): a path or a URL")

    e = sub.add_parser("eval", help="score detections against ground truth",
                       description="Precision, recall, F1 and duplicate rate per class of "
                       "a geodet output against labelled truth (greedy matching by score), "
                       "and recall of objects crossing tile seams vs the rest.")
    e.add_argument("detections", help="a GeoPackage written by geodet detect")
    e.add_argument("truth", help="vector file of true objects with a class_name column")
    e.add_argument("--iou", type=float, default=0.5, help="IoU for a match (default 0.5)")
    e.add_argument("--truth-layer", help="layer of the truth file (default: the first)")

    r = sub.add_parser("report", help="summarise a geodet GeoPackage, draw a quick-look",
                       description="Per run the model, execution provider, tile counts and "
                       "time; per scene and class the detections and their scores; the "
                       "failed tiles and why. --png draws each scene small (from its "
                       "overviews) with the detections and failed tiles.")
    r.add_argument("output", help="a GeoPackage written by geodet detect")
    r.add_argument("--png", help="also draw a quick-look picture to this .png file")
    r.add_argument("--size", type=int, default=2048, help="longest side of each scene in "
                   "the quick-look, in pixels (default 2048)")
    r.add_argument("--json", action="store_true", help="print the report as JSON")

    m = sub.add_parser("demo", help="generate a sample scene and detect on it",
                       description="Generate a sample scene with known objects, run the "
                       "full pipeline on it with the bundled model, and score the result.")
    m.add_argument("--out", default="geodet-demo", help="folder for the outputs "
                   "(default ./geodet-demo)")
    m.add_argument("--size", type=int, default=4096, help="scene side in pixels")
    m.add_argument("--seed", type=int, default=0, help="random seed of the scene")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    for command in sub.choices.values():
        command.add_argument("--debug", action="store_true", help="print the full "
                             "traceback of an unexpected error")
    return parser


def _detect(args: argparse.Namespace) -> int:
    from geodet import jobfile
    from geodet.api import detect, plan
    from geodet.job import describe_plan
    from geodet.progress import json_line

    flags = {k: v for k, v in vars(args).items() if k in Options.model_fields}
    as_json = flags.get("log_format") == "json"
    try:
        req = jobfile.combine(jobfile.load(args.config) if args.config else None,
                              args.scenes, args.model, args.out, flags)
        options = Options.parse(**req.options)
        as_json = options.log_format == "json"
        if args.dry_run:
            planned = plan(req.scenes, req.model, req.out, **req.options).plan(req.origins)
            print(json.dumps(planned) if as_json else describe_plan(planned))
            return 0
        result = detect(req.scenes, req.model, req.out, **req.options)
        run = result.attrs["geodet"]
        if not (options.quiet or as_json):
            print(f"{run['detections']} detections in {run['tiles_done']} tiles "
                  f"({run['tiles_empty']} empty, {run['tiles_failed']} failed) on "
                  f"{', '.join(json.loads(run['execution_providers']))} in "
                  f"{run['seconds_total']:.1f} s -> {req.out}")
        if run["tiles_failed"]:
            raise PartialRunError(f"{run['tiles_failed']} tiles failed; see the 'tiles' "
                                  f"layer of {req.out} for the reasons")
        return 0
    except (Exception, KeyboardInterrupt) as e:
        if not as_json:
            raise
        # Ctrl-C: 128 + SIGINT; an unexpected error: 1, as in plain mode.
        code = getattr(e, "exit_code", 130 if isinstance(e, KeyboardInterrupt) else 1)
        message = str(e) if isinstance(e, GeodetError | KeyboardInterrupt) else \
            one_line("internal error", e)
        print(json_line("exit", exit_code=code, message=message or "interrupted"),
              file=sys.stderr, flush=True)
        return code


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


def _report(args: argparse.Namespace) -> int:
    from geodet.report import draw_quicklook, format_summary, summarise

    summary = summarise(args.output)
    if args.png:
        summary["quicklook"] = {"png": args.png,
                                "scenes": draw_quicklook(args.output, args.png, args.size)}
    print(json.dumps(summary, indent=2) if args.json else format_summary(summary))
    return 0


def _demo(args: argparse.Namespace) -> int:
    from geodet.demo import run_demo

    return run_demo(args.out, size=args.size, seed=args.seed, progress=not args.no_progress)


#: Exit codes of a run stopped by SIGINT or SIGTERM.
STOPPED_CODES = {128 + signal.SIGINT, 128 + signal.SIGTERM}


def _stop_on_signal(signum: int, frame: object) -> None:
    """SIGINT and SIGTERM alike: unwind the run (stop dispatching, keep the progress,
    stop what was started) once; a second signal must not cut that short."""
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, signal.SIG_IGN)
    raise Stopped(signum)


def _crash_report(error: BaseException) -> Path:
    """Write the traceback of an unexpected error to a file; return its path."""
    fd, name = tempfile.mkstemp(prefix="geodet-error-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        traceback.print_exception(error, file=f)
    return Path(name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; return its exit code (see README "Exit codes")."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="geodet: %(levelname)s: %(message)s")
    if threading.current_thread() is not threading.main_thread():
        return _run(args)
    previous = {s: signal.signal(s, _stop_on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = _run(args)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if code in STOPPED_CODES:
        # Stopped: what the run started is stopped (or left to `geodet.reaper`), and
        # tearing the interpreter down after an interrupted Ray start can crash in
        # Ray's native threads (seen: SIGSEGV after the line was printed). Leave now.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(args: argparse.Namespace) -> int:
    """The command, its errors turned into one line and an exit code."""
    try:
        commands = {"detect": _detect, "model-info": _model_info, "eval": _eval,
                    "report": _report, "demo": _demo}
        return commands[args.command](args)
    except InputError as e:
        print(f"geodet: error: {e}", file=sys.stderr)
        return e.exit_code
    except PartialRunError as e:
        print(f"geodet: warning: {e}", file=sys.stderr)
        return e.exit_code
    except GeodetError as e:
        print(f"geodet: failed: {_with_notes(e)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        stopped = e if isinstance(e, Stopped) else Stopped(signal.SIGINT)
        print(f"geodet: stopped by {stopped}: " + (_with_notes(e, first="") or
              "nothing was recorded"), file=sys.stderr)
        return stopped.exit_code
    except Exception as e:
        if args.debug:
            traceback.print_exc()
            return 1
        print(f"geodet: {one_line('internal error', e)} (traceback in {_crash_report(e)}; "
              "--debug prints it)", file=sys.stderr)
        return 1


def _with_notes(error: BaseException, first: str | None = None) -> str:
    """The error's message followed by its notes (what was kept, how to resume)."""
    parts = [str(error) if first is None else first, *getattr(error, "__notes__", ())]
    return "; ".join(p for p in parts if p)
