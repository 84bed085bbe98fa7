"""geodet's engines vs the same work on Ray Data, on one scene, side by side.

    python benchmarks/engines.py --size 6144

All run the same `TileDetector` (read, infer, decode, per-tile merge) over the same
tiles of a generated scene with the bundled detector: geodet's threads engine (the
detectors as threads of this process, no Ray), its actor engine on one local Ray
(plain actors fed chunks, reads overlapped with inference in the actor) and a Ray
Data pipeline (`map_batches` over tile specs with an actor pool of the same size and
threads, the same tiles per call). Prints tiles/s and detections for each, measured
in one run; start-up is the detectors' (Ray's own start is not counted).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import ray

from geodet import engine
from geodet.demo import bundled_model
from geodet.detector import TileDetector
from geodet.job import prepare
from geodet.options import Options
from geodet.settings import Settings
from geodet.synthetic import vehicle_scene


class DataDetector:
    """A Ray Data callable class around the same detector."""

    def __init__(self, model: bytes, settings: Settings, options: Options, device: str,
                 threads: int) -> None:
        self.detector = TileDetector(model, settings, options, device, threads)

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
    options = Options(batch_size=args.batch)
    job = prepare(scene_path, bundled_model(), None, options)
    specs = list(job.grids[0])
    plan = engine.plan_threads("cpu", None, engine.local_cpus())
    rows = []
    chunk = engine.TILES_PER_CHUNK_BATCHES * args.batch  # tiles per call, for all
    t = time.perf_counter()
    detectors = [TileDetector(job.model, job.settings, options, plan.device, plan.threads)
                 for _ in range(plan.count)]
    start = time.perf_counter() - t
    t = time.perf_counter()
    found = sum(len(r.detections) for r in engine.run_threads(detectors, specs, chunk))
    rows.append(("geodet threads", time.perf_counter() - t, start, found))
    ray.init(address="local", _node_ip_address=engine.LOCAL_NODE_IP,
             include_dashboard=False, logging_level="ERROR")
    try:
        plan = engine.plan_actors("cpu", None, engine.cluster_nodes())
        n, threads = plan.count, plan.threads

        t = time.perf_counter()
        actors, _ = engine.start_detectors(job.model, job.settings, options, plan)
        start = time.perf_counter() - t
        t = time.perf_counter()
        found = sum(len(r.detections) for r in engine.run_tiles(actors, specs, chunk))
        rows.append(("geodet actors", time.perf_counter() - t, start, found))
        for a in actors:
            ray.kill(a)

        t = time.perf_counter()
        ds = ray.data.from_items([{"spec": s} for s in specs]).map_batches(
            DataDetector,
            fn_constructor_args=(job.model, job.settings, options, plan.device, threads),
            batch_size=chunk, compute=ray.data.ActorPoolStrategy(size=n), **plan.resources)
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
    base = rows[1][1] + rows[1][2]
    print(f"\nThreads take {(rows[0][1] + rows[0][2]) / base:.2f}x and Ray Data "
          f"{rows[2][1] / base:.2f}x the actor engine's time, start-up included for all "
          "(Ray Data starts its actors inside the pipeline).")
    np.testing.assert_equal([r[3] for r in rows], [rows[0][3]] * 3)


if __name__ == "__main__":
    main()
