"""geodet against the model's own speed and a plain loop, on one generated scene.

    python benchmarks/compare.py                     # 8000 x 8000 (64 MP), bundled model
    python benchmarks/compare.py --model yolov8n     # a YOLOv8n-shaped network at 320 px
    python benchmarks/compare.py --model yolov8n --imgsz 640 --size 24000 \
        --device cuda --variant 'trt=--trt'          # a GPU machine: every row on CUDA
    python benchmarks/compare.py --size 256 --only geodet \
        --variant 'nice0=RAY_worker_niceness=0' --variant 'w2=--workers 2'

Every contender runs in a fresh process over the same tiles (the model's input size
in scene pixels, overlap 0.2 by default), alternated over ``--repeat`` rounds:

- ``ort bN``: ``session.run`` alone over pre-read, preprocessed tiles at batch N, timed
  around the calls only: the model's ceiling on this machine.
- ``loop``: a single-process script as a user would write it (rasterio window ->
  ORT at batch 1 -> decode -> per-tile NMS, boxes kept in scene pixels); it imports
  only numpy, rasterio and onnxruntime, and is timed from process start to exit.
- ``geodet``: ``python -m geodet detect ... --out X.gpkg`` end to end, process start
  to exit (Ray start-up, merge and GeoPackage included).
- ``loop zero`` / ``geodet zero``: the same with a model that computes nothing (same
  input, zeros in the model's output layout): what feeding the model costs.
- ``--variant NAME=SPEC``: geodet again, with extra ``ENV=VALUE`` settings and CLI
  flags.

The table gives each contender's fastest run (on a shared machine other work only
ever adds time), with the median beside it. Memory is the peak, over time and runs,
of the summed proportional set size (PSS: shared pages split between the processes
that share them) of the process and all its descendants (driver, Ray services,
detector workers), sampled every 0.2 s from /proc; "CPU s" sums their user + system
time, "Ray CPU s" the part spent in the processes Ray starts for itself (`RAY_OWN`),
and a last table splits it by process. "others' cores" is the CPU that processes
outside the contender kept busy meanwhile: a run with a high figure is suspect.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import rasterio
from rasterio.windows import Window

# The harness imports geodet and tools lazily, inside `main`: a child process that
# plays the user's loop must pay for its own imports only.

TICKS = os.sysconf("SC_CLK_TCK")
CEILING_TILES = 256  # distinct tiles held in memory for the ORT ceiling, cycled


# --- the children -----------------------------------------------------------------

def grid(length: int, tile: int, overlap: float) -> list[int]:
    """Window starts along one axis: a fixed step, the last window flush with the edge."""
    step = tile - round(overlap * tile)
    n = math.ceil((length - tile) / step) + 1
    return sorted({min(i * step, length - tile) for i in range(n)})


def windows(path: str, tile: int, overlap: float) -> list[Window]:
    with rasterio.open(path) as ds:
        return [Window(col, row, tile, tile) for row in grid(ds.height, tile, overlap)
                for col in grid(ds.width, tile, overlap)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Greedy non-maximum suppression, the textbook way."""
    order, keep = scores.argsort()[::-1], []
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0])
        h = np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1])
        inter = np.clip(w, 0, None) * np.clip(h, 0, None)
        order = rest[inter / (area[i] + area[rest] - inter) <= iou]
    return keep


def providers(device: str) -> list[str]:
    """ONNX Runtime's providers for ``--device``: CUDA first on a GPU machine."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"] if device == "cuda" \
        else ["CPUExecutionProvider"]


def plain_loop(scene: str, model: str, tile: int, overlap: float, conf: float,
               iou: float, device: str = "cpu") -> dict:
    """Read a window, scale it to 0..1, run it, decode the Ultralytics output
    ``[1, 4 + classes, N]``, suppress duplicates per class, keep the boxes."""
    session = ort.InferenceSession(model, providers=providers(device))
    name, (_, bands, height, width) = session.get_inputs()[0].name, \
        session.get_inputs()[0].shape
    kept, wins = [], windows(scene, tile, overlap)
    with rasterio.open(scene) as ds:
        for win in wins:
            img = ds.read(list(range(1, bands + 1)), window=win, out_shape=(bands, height,
                                                                            width))
            pred = session.run(None, {name: img[None].astype(np.float32) / 255})[0][0].T
            classes, scores = pred[:, 4:].argmax(1), pred[:, 4:].max(1)
            ok = scores >= conf
            cx, cy, w, h = pred[ok, :4].T
            boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
            boxes = boxes * (tile / width) + [win.col_off, win.row_off] * 2
            for c in np.unique(classes[ok]):
                mine = np.flatnonzero(classes[ok] == c)
                kept.append(boxes[mine[nms(boxes[mine], scores[ok][mine], iou)]])
    return {"tiles": len(wins), "detections": int(sum(len(k) for k in kept))}


def ort_ceiling(scene: str, model: str, tile: int, overlap: float, batch: int,
                device: str = "cpu") -> dict:
    """``session.run`` alone over pre-read tiles (as many as the scene has, cycling
    through `CEILING_TILES` of them), after one warm-up run, timed around the calls
    only."""
    session = ort.InferenceSession(model, providers=providers(device))
    name, (_, bands, height, width) = session.get_inputs()[0].name, \
        session.get_inputs()[0].shape
    wins = windows(scene, tile, overlap)
    sample = wins[::max(1, len(wins) // CEILING_TILES)][:CEILING_TILES]
    with rasterio.open(scene) as ds:
        tiles = np.stack([ds.read(list(range(1, bands + 1)), window=w,
                                  out_shape=(bands, height, width)) for w in sample])
    tiles = tiles.astype(np.float32) / 255
    session.run(None, {name: tiles[:batch]})  # the first run allocates: not the ceiling
    seconds = 0.0
    for k, start in enumerate(range(0, len(wins), batch)):
        x = np.take(tiles, range(k * batch, k * batch + min(batch, len(wins) - start)),
                    axis=0, mode="wrap")
        t = time.perf_counter()
        session.run(None, {name: x})
        seconds += time.perf_counter() - t
    return {"tiles": len(wins), "seconds": seconds}


def child(args: argparse.Namespace) -> None:
    """Run one contender in this process; print its figures as JSON."""
    if args.child == "loop":
        result = plain_loop(args.scene, args.model, args.tile_size, args.overlap, args.conf,
                            args.iou, args.device)
    else:
        result = ort_ceiling(args.scene, args.model, args.tile_size, args.overlap,
                             args.batch, args.device)
    print(json.dumps(result))


# --- the harness ------------------------------------------------------------------

#: Processes that Ray starts for itself (a prestarted worker that stays idle included).
RAY_OWN = ("gcs_server", "raylet", "dashboard.py", "monitor.py", "log_monitor.py",
           "ray::IDLE", "ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _label(pid: int) -> str:
    """A process's name: a Ray process title (``ray::TileDetector``), the script a
    Python process runs, or the executable."""
    with open(f"/proc/{pid}/cmdline") as f:
        argv = [a for a in f.read().split("\0") if a]
    if not argv:
        raise OSError("exited")
    if argv[0].startswith("ray::"):
        return argv[0].split(".")[0].split()[0]
    if os.path.basename(argv[0]).startswith("python"):
        script = next((a for a in argv[1:] if not a.startswith("-")), argv[0])
        return os.path.basename(script)
    return os.path.basename(argv[0])


def _tree_sample(root: int, labels: dict[int, str]) -> dict[int, tuple[float, int]]:
    """``pid -> (CPU seconds, PSS bytes)`` for `root` and its descendants; updates
    their names in ``labels`` (the root is ``main``; Ray workers take their titles
    after they start)."""
    children: dict[int, list[int]] = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    sample, stack = {}, [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            labels[pid] = "main" if pid == root else _label(pid)
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/smaps_rollup") as f:
                pss = next(int(line.split()[1]) * 1024 for line in f
                           if line.startswith("Pss:"))
        except (OSError, StopIteration):
            continue
        sample[pid] = ((int(fields[11]) + int(fields[12])) / TICKS, pss)
    return sample


def _busy_cpu() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting) since boot."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / TICKS


def wait_quiet(max_wait: float, cores: float = 0.3) -> float:
    """Wait, up to ``max_wait`` seconds, until the machine's busy CPU over one second
    falls below ``cores``; return the last figure (on a shared machine, runs started
    under others' load are noise)."""
    deadline = time.monotonic() + max_wait
    while True:
        before = _busy_cpu()
        time.sleep(1.0)
        busy = _busy_cpu() - before
        if busy < cores or time.monotonic() > deadline:
            return busy


def measure(cmd: list[str], env: dict[str, str] | None = None) -> dict:
    """Run a command; its wall time, peak tree PSS, CPU time, and its stdout."""
    busy0, t0 = _busy_cpu(), time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    peak, cpu, labels = 0, {}, {}
    while proc.poll() is None:
        sample = _tree_sample(proc.pid, labels)
        peak = max(peak, sum(pss for _, pss in sample.values()))
        cpu.update({pid: seconds for pid, (seconds, _) in sample.items()})
        time.sleep(0.2)
    wall, busy = time.perf_counter() - t0, _busy_cpu() - busy0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"{shlex.join(cmd)} failed ({proc.returncode}):\n{stderr}")
    by_label: dict[str, float] = {}
    for pid, seconds in cpu.items():
        by_label[labels[pid]] = by_label.get(labels[pid], 0.0) + seconds
    mine = sum(by_label.values())
    return {"wall": wall, "peak_mib": peak / 2**20, "stdout": stdout, "cpu": mine,
            "ray_cpu": sum(s for label, s in by_label.items() if label in RAY_OWN),
            "by_label": by_label, "others": max(0.0, busy - mine) / wall}


def alternated(names: list[str], repeat: int) -> Iterator[tuple[int, str]]:
    """``(round, name)`` for ``repeat`` rounds over ``names``, each round starting one
    further along (on a shared machine, no contender always runs first or last)."""
    for r in range(repeat):
        for name in names[r % len(names):] + names[:r % len(names)]:
            yield r, name


def parse_variant(text: str) -> tuple[str, dict[str, str], list[str]]:
    """``NAME=ENV=VALUE ... --flag value ...`` -> (name, env, flags)."""
    name, _, spec = text.partition("=")
    words = shlex.split(spec)
    env = dict(w.split("=", 1) for w in words if "=" in w and not w.startswith("-"))
    return name, env, [w for w in words if "=" not in w or w.startswith("-")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8000, help="scene side in pixels")
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--model", default=None,
                        help="an ONNX detector in the Ultralytics layout (default: the "
                        "bundled one), or 'yolov8n' for a YOLOv8n-shaped network with "
                        "random weights (tools/toy_models.py) at --imgsz")
    parser.add_argument("--imgsz", type=int, default=320, help="input size of 'yolov8n'")
    parser.add_argument("--tile-size", type=int, default=None,
                        help="tile side in scene pixels (default: the model's input)")
    parser.add_argument("--overlap", type=float, default=0.2)
    parser.add_argument("--conf", type=float, default=0.25)
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=8, help="geodet's --batch-size")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="cuda: every row on ONNX Runtime's CUDA provider (a GPU "
                        "machine with onnxruntime-gpu)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--variant", action="append", default=[],
                        metavar="NAME=SPEC", help="an extra geodet row: NAME=ENV=VALUE ... "
                        "--flag value ...")
    parser.add_argument("--only", nargs="+", default=None, metavar="ROW",
                        help="run only these rows (the loop always runs: it is the base)")
    parser.add_argument("--quiet", type=float, default=60, metavar="S",
                        help="before each run, wait up to S seconds for an idle machine")
    parser.add_argument("--workdir", default="/tmp/geodet-bench")
    parser.add_argument("--child", choices=["loop", "ort"], help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args)

    import onnx
    import pyogrio

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tools/
    from geodet.demo import bundled_model
    from geodet.synthetic import vehicle_scene
    from geodet.write import RUNS_TABLE
    from tools.toy_models import yolov8n_shaped, zero_cost

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scene = work / f"vehicles-{args.size}-{args.seed}.tif"
    if not scene.exists():  # written under another name: never reuse a half-written one
        partial = scene.with_suffix(".partial.tif")
        vehicle_scene(partial, size=args.size, seed=args.seed)
        partial.replace(scene)
    if args.model == "yolov8n":
        model_path = work / f"yolov8n-shaped-{args.imgsz}.onnx"
        onnx.save(yolov8n_shaped(args.imgsz), model_path)
    else:
        model_path = Path(args.model or bundled_model())
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    image = session.get_inputs()[0]
    sample = session.run(None, {image.name: np.zeros([1, *image.shape[1:]], np.float32)})
    if len(sample) != 1 or sample[0].ndim != 3:
        parser.error(f"{model_path}: the plain loop decodes the Ultralytics layout "
                     "[B, 4 + classes, N] only: give such a model")
    zero_path = work / f"{model_path.stem}-zero.onnx"
    onnx.save(zero_cost(onnx.load(model_path), {o.name: a for o, a in zip(
        session.get_outputs(), sample, strict=True)}), zero_path)
    tile = args.tile_size or image.shape[3]
    if args.size < tile:
        parser.error(f"--size {args.size} is smaller than a tile ({tile} px)")

    base = [sys.executable, __file__, "--scene", str(scene), "--tile-size", str(tile),
            "--device", args.device,
            "--overlap", str(args.overlap), "--conf", str(args.conf), "--iou",
            str(args.iou)]
    out = work / "compare-out.gpkg"

    def geodet(model: Path, flags: list[str]) -> list[str]:
        return [sys.executable, "-m", "geodet", "detect", str(scene), "--model", str(model),
                "--out", str(out), "--overwrite", "--no-progress", "--tile-size", str(tile),
                "--overlap", str(args.overlap), "--conf", str(args.conf), "--iou",
                str(args.iou), "--batch-size", str(args.batch), "--device", args.device,
                *flags]

    rows: dict[str, tuple[list[str], dict[str, str]]] = {
        "ort b1": ([*base, "--model", str(model_path), "--child", "ort", "--batch", "1"], {}),
        f"ort b{args.batch}": ([*base, "--model", str(model_path), "--child", "ort",
                                "--batch", str(args.batch)], {}),
        "loop": ([*base, "--model", str(model_path), "--child", "loop"], {}),
        "loop zero": ([*base, "--model", str(zero_path), "--child", "loop"], {}),
        "geodet": (geodet(model_path, []), {}),
        "geodet zero": (geodet(zero_path, []), {}),
    }
    for text in args.variant:
        name, env, flags = parse_variant(text)
        rows[f"geodet {name}"] = (geodet(model_path, flags), env)
    if args.only:
        rows = {k: v for k, v in rows.items() if k in args.only or k == "loop"}

    print(f"scene {args.size} x {args.size} ({args.size ** 2 / 1e6:.0f} MP), model "
          f"{model_path.name} ({image.shape[3]} px input), tiles of {tile} px, overlap "
          f"{args.overlap}, batch {args.batch}; {args.repeat} alternated rounds; "
          f"{os.cpu_count()} CPUs, ONNX Runtime {ort.__version__}", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for r, name in alternated(list(rows), args.repeat):
        cmd, env = rows[name]
        wait_quiet(args.quiet)
        m = measure(cmd, env)
        if cmd[1] == __file__:
            m.update(json.loads(m["stdout"]))
            m["wall"] = m.get("seconds", m["wall"])
        else:  # "N detections in T tiles (...)" from the CLI, stage times from the run
            words = m["stdout"].split()
            m.update(detections=int(words[0]), tiles=int(words[3]))
            m.update(pyogrio.read_dataframe(out, layer=RUNS_TABLE).iloc[0])
        runs[name].append(m)
        print(f"  round {r + 1} {name:<24} {m['wall']:7.2f} s  others "
              f"{m['others']:.2f} cores", file=sys.stderr, flush=True)

    report(runs, args.size * args.size / 1e6)


def report(runs: dict[str, list[dict]], mp: float) -> None:
    """Markdown tables: each contender's fastest run (on a shared machine, other work
    only ever adds time) with the median beside it; geodet's own stage times; CPU by
    process."""
    best = {name: min(ms, key=lambda m: m["wall"]) for name, ms in runs.items()}
    loop = best["loop"]["wall"]
    print("| contender | best s | median s | tiles/s | MP/s | vs loop | peak MiB | CPU s "
          "| Ray CPU s | detections | others' cores |")
    print("| --- |" + " ---: |" * 10)
    for name, b in best.items():
        median = statistics.median(m["wall"] for m in runs[name])
        print(f"| {name} | {b['wall']:.2f} | {median:.2f} | {b['tiles'] / b['wall']:.0f} | "
              f"{mp / b['wall']:.2f} | {loop / b['wall']:.2f}x | "
              f"{max(m['peak_mib'] for m in runs[name]):.0f} | {b['cpu']:.1f} | "
              f"{b['ray_cpu']:.1f} | {b.get('detections', '')} | {b['others']:.2f} |")
    mine = [name for name in runs if "seconds_total" in best[name]]
    print("\ngeodet's own account of its fastest run (geodet_runs): detect() from call to "
          "return, the workers' summed read and infer time\n")
    print("| contender | process s | detect() s | read s | infer s | merge s |")
    print("| --- |" + " ---: |" * 5)
    for name in mine:
        cols = ["wall", "seconds_total", "seconds_read", "seconds_infer", "seconds_merge"]
        print(f"| {name} | " + " | ".join(f"{float(best[name][c]):.2f}" for c in cols) + " |")
    print("\nCPU seconds by process, fastest run\n")
    print("| process | " + " | ".join(mine) + " |")
    print("| --- |" + " ---: |" * len(mine))
    for label in sorted({k for name in mine for k in best[name]["by_label"]}):
        cells = [best[name]["by_label"].get(label, 0.0) for name in mine]
        print(f"| {label} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")

if __name__ == "__main__":
    main()
