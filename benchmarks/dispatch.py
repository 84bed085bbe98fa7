"""How many tiles a second geodet's driver can dispatch when the detectors cost nothing.

    python benchmarks/dispatch.py                     # the table (about 10 minutes)
    python benchmarks/dispatch.py --tiles 200000 --detections 5 --chunk 32 --actors 2
    python benchmarks/dispatch.py --profile --detections 5 --chunk 32 --actors 2 \
        --progress on                                 # cProfile of the driver, one run

Actors that read no pixels and return at once (a ``done`` `TileOutcome` per tile, with
no detections or ``--detections`` made-up ones per tile) are fed through geodet's own
dispatch loop, `geodet.engine.run_tiles`, on the embedded local Ray
(`geodet.engine.ray_cluster`). The tile specs are drawn lazily, as `geodet.job.Job.todo`
draws them, from the real tile plan (`geodet.tiling.plan_grid`) of a huge virtual scene
(``--side`` pixels square, 256 px tiles, overlap 0.2). Per chunk the driver does what
`geodet.engine.execute` and `geodet.api.detect` do: keeps the detections, counts the
outcomes, and with progress ``on`` records the chunk in a `geodet.resume.ResumeRecord`
beside an output (one SQLite transaction a chunk) and updates a `geodet.progress.Reporter`;
with ``off`` it records nothing. Configurations (detections a tile x actors x tiles a
call x progress) are alternated over ``--repeat`` rounds; the table gives the median and
best tiles/s of each and, with progress on, the record's size on disk per tile (the
file once its WAL is folded in), from which the size per detection follows.
Ray start-up, planning, merging and writing are not included (see
``benchmarks/compare.py`` for a whole run).
"""

from __future__ import annotations

import argparse
import cProfile
import itertools
import os
import pstats
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import ray
from compare import wait_quiet  # benchmarks/, this script's own folder

from geodet import engine
from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.job import Job
from geodet.options import Options
from geodet.progress import Reporter
from geodet.resume import ResumeRecord
from geodet.tiling import plan_grid


class InstantDetector:
    """A detector that reads nothing and returns, at once, a ``done`` outcome and
    ``per_tile`` made-up detections (inside the tile) per tile."""

    def __init__(self, per_tile: int) -> None:
        self.per_tile = per_tile

    def provider_name(self) -> str:
        return "none"

    def run(self, specs: list) -> ChunkResult:
        n, k = self.per_tile, len(specs)
        if n:  # boxes of 20-60 px at fractional positions, scores 0.3-1 (as a model's)
            rng = np.random.default_rng(specs[0].tile_id)
            xy = np.repeat([[s.col_off, s.row_off] for s in specs], n, axis=0) \
                + rng.uniform(0, 200, (k * n, 2))
            boxes = np.hstack([xy, xy + rng.uniform(20, 60, (k * n, 2))])
            dets = Detections.build(boxes, rng.uniform(0.3, 1.0, k * n),
                                    rng.integers(0, 3, k * n),
                                    np.repeat([s.scene for s in specs], n),
                                    np.repeat([s.tile_id for s in specs], n))
        else:
            dets = Detections.empty()
        return ChunkResult(dets, tuple(TileOutcome(s.scene, s.tile_id, TileStatus.DONE, n)
                                       for s in specs), "none", {"read": 0.0, "infer": 0.0})


def todo(side: int, tiles: int):
    """The first ``tiles`` specs of a ``side`` x ``side`` scene, drawn as a job draws
    them (`Job.todo` over every tile with data, none done)."""
    grid = plan_grid(side, side, (256, 256), 0.2)
    n = len(grid)
    if tiles > n:
        raise SystemExit(f"--side {side} plans only {n} tiles: ask for fewer or a larger side")
    job = SimpleNamespace(grids=(grid,), has_data=(np.ones(n, dtype=bool),))
    return itertools.islice(Job.todo(job, (np.zeros(n, dtype=bool),)), tiles)


class Run:
    """One dispatch of every tile, with the driver's per-chunk work."""

    def __init__(self, work: Path, progress: bool) -> None:
        self.out = work / f"out-{time.monotonic_ns()}.gpkg" if progress else None
        self.progress = progress
        self.record_bytes = 0

    def __call__(self, actors: list, specs, chunk: int) -> tuple[int, int, float]:
        """Tiles and detections dispatched, and the seconds it took."""
        record = ResumeRecord(self.out, {"bench": "dispatch"}, resume=False)
        report = Reporter(Options(progress=False))
        parts, counts, seconds, used = [], Counter(), {"read": 0.0, "infer": 0.0}, set()
        t = time.perf_counter()
        with record, report:
            for result in engine.run_tiles(actors, specs, chunk):
                if self.progress:  # geodet.api.detect's on_chunk
                    record.add(result)
                    report.update(result)
                parts.append(result.detections)  # geodet.engine.execute's loop
                counts.update(o.status for o in result.tiles)
                for k, v in result.seconds.items():
                    seconds[k] += v
                used.add(result.provider)
            dets = Detections.concat(parts)
            elapsed = time.perf_counter() - t
            if self.out is not None:  # the file once its WAL is folded in (untimed)
                record.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self.record_bytes = os.path.getsize(record.path)
            record.finish()
        return sum(counts.values()), len(dets), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", type=int, default=50_000, help="tiles per run")
    parser.add_argument("--side", type=int, default=1_000_000,
                        help="the virtual scene's side in pixels (10^6: 23.8 M tiles)")
    parser.add_argument("--chunk", type=int, nargs="+", default=[32, 128, 512],
                        help="tiles per call (geodet: 4 batches of --batch-size, 32)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--progress", nargs="+", choices=["on", "off"], default=["on", "off"])
    parser.add_argument("--detections", type=int, nargs="+", default=[0, 5],
                        help="made-up detections per tile the actors return")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quiet", type=float, default=10, metavar="S",
                        help="before each run, wait up to S seconds for an idle machine")
    parser.add_argument("--profile", action="store_true",
                        help="profile one run of the first --actors, --chunk, --progress")
    args = parser.parse_args()

    folder = tempfile.TemporaryDirectory(prefix="geodet-dispatch-")  # removed at exit
    work = Path(folder.name)
    configs = list(itertools.product(args.detections, args.actors, args.chunk,
                                     args.progress))
    rates: dict[tuple, list[float]] = {c: [] for c in configs}
    sizes: dict[tuple, int] = {}
    t = time.perf_counter()
    with engine.ray_cluster(None):
        startup = {"start Ray": time.perf_counter() - t}
        cpus = int(ray.cluster_resources()["CPU"])
        t = time.perf_counter()
        # No CPU reserved, so that every pool stays up and the runs can alternate.
        pools = {(d, n): [ray.remote(InstantDetector).options(num_cpus=0, max_restarts=0)
                          .remote(d) for _ in range(n)]
                 for d in args.detections for n in args.actors}
        ray.get([a.provider_name.remote() for actors in pools.values() for a in actors])
        startup[f"start {sum(map(len, pools.values()))} actors"] = time.perf_counter() - t
        for actors in pools.values():  # warm up
            Run(work, True)(actors, todo(args.side, 2000), args.chunk[0])
        if args.profile:
            d, n, chunk, mode = configs[0]
            run = Run(work, mode == "on")
            with cProfile.Profile() as prof:
                tiles, _, s = run(pools[d, n], todo(args.side, args.tiles), chunk)
            print(f"{tiles} tiles, {d} detections a tile, {n} actor(s), chunk {chunk}, "
                  f"progress {mode}: {tiles / s:,.0f} tiles/s under the profiler\n")
            pstats.Stats(prof, stream=sys.stdout).sort_stats("tottime").print_stats(30)
            return
        for r in range(args.repeat):
            for config in configs[r % len(configs):] + configs[:r % len(configs)]:
                d, n, chunk, mode = config
                wait_quiet(args.quiet)
                run = Run(work, mode == "on")
                tiles, dets, s = run(pools[d, n], todo(args.side, args.tiles), chunk)
                assert tiles == args.tiles and dets == tiles * d, (tiles, dets)
                rates[config].append(tiles / s)
                sizes[config] = run.record_bytes
        t = time.perf_counter()
    startup["stop Ray"] = time.perf_counter() - t
    print(f"{args.tiles} tiles a run from a {args.side} x {args.side} px plan, local Ray "
          f"with {cpus} CPUs, {args.repeat} alternated rounds; "
          + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()) + "\n")
    print("| detections a tile | actors | tiles a call | progress | tiles/s median "
          "| tiles/s best | record bytes a tile |")
    print("| ---: | ---: | ---: | --- | ---: | ---: | ---: |")
    for (d, n, chunk, mode), runs in rates.items():
        size = f"{sizes[d, n, chunk, mode] / args.tiles:.1f}" if mode == "on" else ""
        print(f"| {d} | {n} | {chunk} | {mode} | {statistics.median(runs):,.0f} "
              f"| {max(runs):,.0f} | {size} |")
    per_tile = {d: statistics.median(v / args.tiles for (d2, *_, mode), v in sizes.items()
                                     if d2 == d and mode == "on") for d in args.detections
                if "on" in args.progress}
    if 0 in per_tile and len(per_tile) > 1:
        print("\nprogress record (the file once its WAL is folded in): "
              f"{per_tile[0]:.1f} bytes a tile without detections, " + ", ".join(
                  f"{(b - per_tile[0]) / d:.1f} bytes a detection at {d} a tile"
                  for d, b in per_tile.items() if d))


if __name__ == "__main__":
    main()
