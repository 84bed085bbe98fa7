"""How fast geodet can feed a model that costs nothing, against bare rasterio reads.

    python benchmarks/gpu_feed.py                       # 24000 x 24000 (576 MP), 640 px
    python benchmarks/gpu_feed.py --size 8000 --readers 1 2 --repeat 1   # quick look
    python benchmarks/gpu_feed.py --gsd 0.3 --readers 2 4 --feed gpu      # resampled tiles

With ``--gsd``, every row reads the windows that give the model that ground
resolution (0.3 m/px: 1920 scene px at 0.1 m/px) resampled to ``--imgsz`` (bilinear),
as geodet does for a model trained at another resolution than the scene's.

What a GPU detector must do besides inference: read, decode and preprocess tiles,
and turn the model's output into detections. A drone orthomosaic is generated and
stored as drone mosaics often are (JPEG in YCbCr, 512 px blocks), and a model with
the input and output of a YOLOv8n at ``--imgsz`` that computes nothing (zeros in
its output layout, `tools.toy_models.zero_cost`) stands for an infinitely fast GPU.
Rows, alternated over ``--repeat`` rounds, each in a fresh process:

- ``bare xN``: N threads doing nothing but ``rasterio`` reads of the same windows
  (tile side ``--imgsz``, overlap 0.2), each thread with its own dataset, timed
  around the reads: what decoding alone allows.
- ``geodet read xN``: geodet's own reading alone (`geodet.read.TileReader` on N
  threads sharing one `geodet.blocks.Blocks`), the tiles dropped: what geodet's
  readers can feed, with no model and no inference thread.
- ``geodet rN``: ``geodet detect`` with the zero-cost model and ``--readers N``
  (threads engine, one detector), end to end; its steady state is its wall time
  minus that of the same command on a one-tile crop of the mosaic (start-up,
  model load, writing: what does not grow with the scene), as the issue defines it.
- ``geodet rN u8``: the same with the zero-cost model taking uint8: what geodet feeds
  a float model on a GPU for 8-bit scenes, the scaling to 0..1 moved into the graph
  (`geodet.preprocess.scaled_on_device`), where a GPU does it; the host side is
  exactly geodet's (tiles copied into a uint8 batch), and the device's share is
  free here, as the rest of an infinitely fast GPU's.
- ``geodet rN gpu``: the whole of what a GPU detector runs: the YOLOv8n-shaped model
  with both of geodet's rewrites (uint8 input scaled in the graph, output reduced to
  each candidate's best class, `geodet.decode.reduced_on_device`), made zero-cost, run
  with ``--layout end2end`` as the detector decodes it on a GPU: the host's share
  exactly, the device's free.
- ``geodet ray rN``: the same on Ray actors (``--engine ray``).

Tiles/s of geodet rows are steady-state; "x bare 1" divides by the one-thread
reader's tiles/s of the same round.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import rasterio
import rasterio.shutil
from compare import alternated, grid, measure, wait_quiet  # benchmarks/, this script's folder
from rasterio.enums import Resampling
from rasterio.windows import Window

#: The zero-cost models' ends (see the module's docstring), and the options that
#: decode them.
FEEDS = {"float": [], "uint8": [], "gpu": ["--layout", "end2end"]}

JPEG = {"driver": "GTiff", "tiled": True, "blockxsize": 512, "blockysize": 512,
        "compress": "JPEG", "photometric": "YCBCR", "jpeg_quality": 90, "bigtiff": "YES"}


def jpeg_mosaic(work: Path, size: int) -> Path:
    """A ``size`` x ``size`` JPEG-compressed mosaic: a generated 4000 px aerial scene
    repeated as a grid through a VRT, then written in 512 px JPEG blocks."""
    from geodet.synthetic import vehicle_scene

    path = work / f"mosaic-jpeg-{size}.tif"
    if path.exists():
        return path
    base = work / "mosaic-base-4000.tif"
    if not base.exists():
        vehicle_scene(base, size=4000, seed=11)
    offsets = [(c, r) for r in range(0, size, 4000) for c in range(0, size, 4000)]
    with rasterio.open(base) as ds:
        t = ds.transform
        bands = "".join(
            f"<VRTRasterBand dataType='Byte' band='{b}'>" + "".join(
                f"<SimpleSource><SourceFilename relativeToVRT='0'>{base}</SourceFilename>"
                f"<SourceBand>{b}</SourceBand><SrcRect xOff='0' yOff='0' xSize='4000' "
                f"ySize='4000'/><DstRect xOff='{c}' yOff='{r}' xSize='4000' ySize='4000'/>"
                "</SimpleSource>" for c, r in offsets) + "</VRTRasterBand>"
            for b in (1, 2, 3))
        vrt = (f"<VRTDataset rasterXSize='{size}' rasterYSize='{size}'><SRS>"
               f"{ds.crs.to_wkt()}</SRS><GeoTransform>{t.c}, {t.a}, {t.b}, {t.f}, {t.d}, "
               f"{t.e}</GeoTransform>{bands}</VRTDataset>")
    partial = path.with_suffix(".partial.tif")
    with rasterio.Env(GDAL_NUM_THREADS="ALL_CPUS"):
        rasterio.shutil.copy(vrt, partial, **JPEG)
    partial.replace(path)
    return path


def crop(scene: Path, side: int) -> Path:
    """The first ``side`` x ``side`` pixels of ``scene``, stored the same way."""
    path = scene.with_name(f"{scene.stem}-crop{side}.tif")
    if not path.exists():
        with rasterio.open(scene) as ds:
            profile = {**ds.profile, **JPEG, "width": side, "height": side,
                       "transform": ds.window_transform(Window(0, 0, side, side))}
            with rasterio.open(path, "w", **profile) as out:
                out.write(ds.read(window=Window(0, 0, side, side)))
    return path


def bare(scene: str, imgsz: int, tile: int, threads: int) -> dict:
    """Read every window of the grid (side ``tile``, resampled to ``imgsz`` where they
    differ) on ``threads`` threads (own datasets), nothing else."""
    with rasterio.open(scene) as ds:
        width, height, count = ds.width, ds.height, ds.count
    windows = [Window(c, r, tile, tile) for r in grid(height, tile, 0.2)
               for c in grid(width, tile, 0.2)]

    def read(part: list[Window]) -> None:
        with rasterio.open(scene) as ds:
            for w in part:
                ds.read(window=w, out_shape=(count, imgsz, imgsz),
                        resampling=Resampling.bilinear)

    workers = [threading.Thread(target=read, args=(windows[i::threads],))
               for i in range(threads)]
    t = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"tiles": len(windows), "seconds": time.perf_counter() - t}


def cut(scene: str, imgsz: int, tile: int, threads: int) -> dict:
    """geodet's own reading alone: the tiles of its plan, read on ``threads`` threads
    (own datasets) that cut them from one shared cache of decoded blocks, then
    dropped: what the readers can feed, with no model and no inference thread."""
    import numpy as np

    from geodet.blocks import Blocks
    from geodet.read import TileReader
    from geodet.scene import open_scene
    from geodet.tiling import plan_grid

    info = open_scene(scene)
    specs = list(plan_grid(info.width, info.height, (tile, tile), 0.2, scene=0,
                           extent=(0, 0, info.width, info.height)))
    blocks, local = Blocks(), threading.local()

    def read(spec) -> np.ndarray:
        if not hasattr(local, "reader"):
            local.reader = TileReader([info], blocks)
        return local.reader.read(spec, (imgsz, imgsz), (tile, tile)).pixels

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        for _ in pool.map(read, specs):
            pass
    return {"tiles": len(specs), "seconds": time.perf_counter() - t}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=24000, help="mosaic side in pixels")
    parser.add_argument("--imgsz", type=int, default=640, help="model input = tile side")
    parser.add_argument("--readers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--bare", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--ray", action="store_true", help="also run the Ray engine rows")
    parser.add_argument("--feed", nargs="+", choices=list(FEEDS), default=["float", "gpu"],
                        help="the model's ends: what it is fed, what it returns")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=30, metavar="S")
    parser.add_argument("--workdir", default="/tmp/geodet-bench")
    parser.add_argument("--cut", type=int, nargs="+", default=[2],
                        help="thread counts of the 'geodet read' rows")
    parser.add_argument("--gsd", type=float, default=None,
                        help="the model's ground resolution (m/px): tiles resampled to "
                        "it (default: the mosaic's own, 0.1)")
    parser.add_argument("--tile", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-cut", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--scene", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_bare or args.child_cut:
        child = bare if args.child_bare else cut
        print(json.dumps(child(args.scene, args.imgsz, args.tile,
                               args.child_bare or args.child_cut)))
        return

    import numpy as np
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tools/
    from geodet.decode import reduced_on_device
    from geodet.model import inspect_model
    from geodet.preprocess import scaled_on_device
    from tools.toy_models import yolov8n_shaped, zero_cost

    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scene = jpeg_mosaic(work, args.size)
    with rasterio.open(scene) as ds:  # scene pixels a tile, as geodet works it out
        tile = round(args.imgsz * args.gsd / ds.res[0]) if args.gsd else args.imgsz
    one_tile = crop(scene, tile)
    model = yolov8n_shaped(args.imgsz)
    path = work / f"yolov8n-{args.imgsz}.onnx"
    onnx.save(model, path)
    raw = model.SerializeToString()
    on_gpu = reduced_on_device(scaled_on_device(raw, inspect_model(path, raw), None, None),
                               "ultralytics")
    models = {}
    for feed, graph in (("float", raw), ("uint8", raw), ("gpu", on_gpu)):
        session = ort.InferenceSession(graph, providers=["CPUExecutionProvider"])
        fed = session.get_inputs()[0]
        sample = session.run(None, {fed.name: np.zeros(
            (1, 3, args.imgsz, args.imgsz), np.uint8 if "uint8" in fed.type else np.float32)})
        zero = zero_cost(onnx.load_from_string(graph), {
            o.name: a for o, a in zip(session.get_outputs(), sample, strict=True)})
        if feed == "uint8":
            zero.graph.input[0].type.tensor_type.elem_type = onnx.TensorProto.UINT8
        onnx.save(zero, models.setdefault(feed, work / f"zero-{args.imgsz}-{feed}.onnx"))
    out = work / "gpu-feed.gpkg"

    def geodet(path: Path, readers: int, engine: str, feed: str) -> list[str]:
        return [sys.executable, "-m", "geodet", "detect", str(path), "--model",
                str(models[feed]), "--out", str(out), "--overwrite", "--no-progress",
                *(["--gsd", str(args.gsd)] if args.gsd else ["--tile-size", str(tile)]),
                "--overlap", "0.2", "--readers",
                str(readers), "--engine", engine, *FEEDS[feed]]

    rows: dict[str, tuple[list[str], list[str] | None]] = {
        f"bare x{n}": ([sys.executable, __file__, "--scene", str(scene), "--imgsz",
                        str(args.imgsz), "--tile", str(tile), "--child-bare", str(n)], None)
        for n in args.bare}
    rows.update({f"geodet read x{n}": ([sys.executable, __file__, "--scene", str(scene),
                                       "--imgsz", str(args.imgsz), "--tile", str(tile),
                                       "--child-cut", str(n)],
                                      None) for n in args.cut})
    for engine in ("threads", "ray") if args.ray else ("threads",):
        for feed in args.feed:
            for n in args.readers:
                name = (f"geodet {'ray ' if engine == 'ray' else ''}r{n}"
                        f"{ {'float': '', 'uint8': ' u8', 'gpu': ' gpu'}[feed]}")
                rows[name] = (geodet(scene, n, engine, feed), geodet(one_tile, n, engine, feed))
    with rasterio.open(scene) as ds:
        mp = ds.width * ds.height / 1e6
    print(f"mosaic {args.size} x {args.size} ({mp:.0f} MP, JPEG YCbCr q90, 512 px blocks, "
          f"{scene.stat().st_size / 2**20:.0f} MiB), zero-cost model at {args.imgsz} px, "
          f"tiles of {tile} scene px, "
          f"overlap 0.2; {args.repeat} alternated rounds", flush=True)
    runs: dict[str, list[dict]] = {name: [] for name in rows}
    for r, name in alternated(list(rows), args.repeat):
        cmd, small = rows[name]
        wait_quiet(args.quiet)
        m = measure(cmd)
        if small is None:
            m.update(json.loads(m["stdout"]))
        else:
            fixed = measure(small)
            m.update(tiles=int(m["stdout"].split()[3]), fixed=fixed["wall"],
                     seconds=m["wall"] - fixed["wall"])
        runs[name].append(m)
        print(f"  round {r + 1} {name:<16} {m['seconds']:7.2f} s steady, "
              f"{m['wall']:6.2f} s wall, others {m['others']:.2f} cores",
              file=sys.stderr, flush=True)
    report(runs)


def report(runs: dict[str, list[dict]]) -> None:
    """One row per contender: median steady-state tiles/s and its ratio to one bare
    reader (each round's ratio, then the median), wall, fixed cost, peak memory."""
    base = runs["bare x1"]
    print("| contender | tiles | steady s | tiles/s | x bare 1 | wall s | fixed s | "
          "peak MiB | CPU s |")
    print("| --- |" + " ---: |" * 8)
    for name, ms in runs.items():
        rate = statistics.median(m["tiles"] / m["seconds"] for m in ms)
        ratio = statistics.median(
            (m["tiles"] / m["seconds"]) / (b["tiles"] / b["seconds"])
            for m, b in zip(ms, base, strict=True))
        fixed = statistics.median(m["fixed"] for m in ms) if "fixed" in ms[0] else 0.0
        print(f"| {name} | {ms[0]['tiles']} | {statistics.median(m['seconds'] for m in ms):.2f}"
              f" | {rate:.0f} | {ratio:.2f}x | {statistics.median(m['wall'] for m in ms):.2f} "
              f"| {fixed:.2f} | {max(m['peak_mib'] for m in ms):.0f} | "
              f"{statistics.median(m['cpu'] for m in ms):.1f} |")


if __name__ == "__main__":
    main()
