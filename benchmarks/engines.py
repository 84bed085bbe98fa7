"""geodet's actor engine vs the same work on Ray Data, on one scene, side by side.

    python benchmarks/engines.py --size 6144

Both run the same `TileDetector` (read, infer, decode, per-tile merge) over the same
tiles of a generated scene with the bundled detector, on one local Ray: geodet's
engine (plain actors fed chunks, reads overlapped with inference in the actor) and a
Ray Data pipeline (`map_batches` over tile specs with an actor pool of the same size
and threads, the same tiles per call). Prints tiles/s and detections for each, measured in one run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from geodet import engine
from geodet.config import DetectConfig
from geodet.demo import bundled_model
from geodet.model import inspect_model
from geodet.raster import open_scene
from geodet.settings import resolve
from geodet.synthetic import vehicle_scene
from geodet.tiling import plan_tiles
from geodet.worker import RunSettings, TileDetector


class DataDetector:
    """A Ray Data callable class around the same detector."""

    def __init__(self, settings: RunSettings) -> None:
        self.detector = TileDetector(settings)

    def __call__(self, batch: dict) -> dict:
        result = self.detector.run(list(batch["spec"]))
        d = result.detections
        return {"tile_id": d.tile_ids, "score": d.scores, "x0": d.boxes[:, 0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=6144)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geodet-engines-"))
    scene_path = work / "scene.tif"
    vehicle_scene(scene_path, size=args.size, seed=3)
    cfg = DetectConfig(scenes=[str(scene_path)], model=bundled_model())
    info, scene = inspect_model(cfg.model), open_scene(scene_path)
    eff = resolve(cfg, info, [scene])
    specs = plan_tiles(scene.width, scene.height, eff.tiles[0], eff.overlap)
    ray.init(address="local", _node_ip_address=engine.LOCAL_NODE_IP,
             include_dashboard=False, logging_level="ERROR")
    try:
        n, resources, dev, threads = engine.plan_actors("cpu")
        settings = RunSettings(
            model=info, layout=eff.layout, scenes=(scene,), tiles=eff.tiles,
            input_size=eff.model_tile, batch_size=args.batch, conf=eff.conf, iou=eff.iou,
            own_cores=True, mean=eff.mean, std=eff.std, class_aware=True, device=dev,
            threads=threads)
        rows = []
        chunk = engine.TILES_PER_CHUNK_BATCHES * args.batch  # tiles per call, for both

        t = time.perf_counter()
        actors, _ = engine.start_detectors(settings, n, resources)
        start = time.perf_counter() - t
        t = time.perf_counter()
        found = sum(len(r.detections) for r in engine.run_tiles(actors, specs, chunk))
        rows.append(("geodet actors", time.perf_counter() - t, start, found))
        for a in actors:
            ray.kill(a)

        t = time.perf_counter()
        ds = ray.data.from_items([{"spec": s} for s in specs]).map_batches(
            DataDetector, fn_constructor_args=(settings,), batch_size=chunk,
            compute=ray.data.ActorPoolStrategy(size=n), **resources)
        found = sum(len(b["tile_id"]) for b in ds.iter_batches(batch_size=None))
        rows.append(("Ray Data map_batches", time.perf_counter() - t, float("nan"), found))
    finally:
        ray.shutdown()
    print(f"scene {args.size} x {args.size}, {len(specs)} tiles, {n} detector(s) of "
          f"{threads} threads, batch {args.batch}\n")
    print(f"{'engine':<22} {'seconds':>8} {'tiles/s':>8} {'start s':>8} {'detections':>10}")
    for name, seconds, start, found in rows:
        print(f"{name:<22} {seconds:>8.1f} {len(specs) / seconds:>8.1f} {start:>8.1f} "
              f"{found:>10}")
    base = rows[0][1] + rows[0][2]
    print(f"\nRay Data takes {rows[1][1] / base:.2f}x the actor engine's time, start-up "
          "included for both (Ray Data starts its actors inside the pipeline).")
    np.testing.assert_equal(rows[0][3], rows[1][3])


if __name__ == "__main__":
    main()
