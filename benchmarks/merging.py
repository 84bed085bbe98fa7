"""Merge strategies side by side: quality on a generated scene, speed at scale.

    python benchmarks/merging.py                 # both parts
    python benchmarks/merging.py --part quality  # or --part scale
    python benchmarks/merging.py --part driver --sizes 10000000 100000000

Quality: a generated aerial scene (cars and trucks, parked in rows 2-5 px apart,
many across tile seams; trucks longer than the smaller overlaps) through the full
pipeline (local Ray, the bundled detector) for each strategy and overlap;
precision, recall, duplicate rate, recall of objects crossing a tile seam vs the
rest, and the merge stage's time.

Scale: simulated per-tile detections of a large mosaic (objects 8-60 px, tiles of
256 px, overlap 0.2, fragments where tiles cut objects), merged by each strategy;
time and peak memory for 10^4 .. 10^7 detections. Ownership's time includes its
per-tile core filter (which, in a real run, happens in the workers).

Driver (``--part driver``): the default merge alone as the driver runs it, at sizes
counted as the driver counts them (detections already filtered to their tile's core,
as the workers return them): the same simulation, written to disk a block at a time,
then merged and sorted (as `geodet.detect` sorts) in a fresh process, whose peak
resident memory is reported with its input's size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pyogrio

from geodet.detections import Detections
from geodet.merge import STRATEGIES, merge
from geodet.tiling import owned

TILE, OVERLAP = 256, 0.2


def quality(size: int, seed: int) -> None:
    import ray

    import geodet
    from geodet.demo import bundled_model
    from geodet.engine import LOCAL_NODE_IP
    from geodet.evaluate import crosses_seam, evaluate
    from geodet.synthetic import CLASSES, vehicle_scene, write_truth

    work = Path(tempfile.mkdtemp(prefix="geodet-merge-"))
    scene = work / "scene.tif"
    boxes, classes = vehicle_scene(scene, size, seed)
    truth = write_truth(work / "truth.gpkg", boxes, scene, np.array(CLASSES)[classes])
    print(f"scene {size} x {size}, {len(truth)} vehicles, bundled detector\n")
    print(f"{'strategy':<10} {'overlap':>7} {'precision':>9} {'recall':>7} {'dup rate':>8} "
          f"{'seam rec':>8} {'rest rec':>8} {'n seam':>6} {'merge s':>8}")
    ray.init(address="local", _node_ip_address=LOCAL_NODE_IP, include_dashboard=False,
             logging_level="ERROR")
    try:
        for strategy in STRATEGIES:
            for overlap in (0.0, 0.1, 0.2, 0.3):
                out = work / f"{strategy}{overlap}.gpkg"
                res = geodet.detect(scene, bundled_model(), out, merge=strategy,
                                    overlap=overlap, overwrite=True, progress=False)
                tiles = pyogrio.read_dataframe(out, layer="tiles")
                ev = evaluate(res, truth, tiles=tiles)["all"]
                n_seam = int(crosses_seam(truth.geometry, tiles.geometry).sum())
                print(f"{strategy:<10} {overlap:>7.1f} {ev['precision']:>9.4f} "
                      f"{ev['recall']:>7.4f} {ev['duplicate_rate']:>8.4f} "
                      f"{ev['recall_seam']:>8.4f} {ev['recall_rest']:>8.4f} {n_seam:>6} "
                      f"{res.attrs['geodet']['seconds_merge']:>8.3f}")
    finally:
        ray.shutdown()


def simulate(n_target: int, seed: int) -> tuple[Detections, np.ndarray]:
    """Per-tile detections (before any merging) of a square mosaic of random objects,
    and the core of each detection's tile."""
    parts, cores = zip(*blocks(int(n_target / PER_OBJECT), seed), strict=True)
    return Detections.concat(list(parts)), np.concatenate(cores)


#: Detections per object before merging, on average (measured), and after the core
#: filter of the ownership merge (1.01: the seam pieces of objects cut by a core edge).
PER_OBJECT, OWNED_PER_OBJECT = 1.7, 1.01


def blocks(n_obj: int, seed: int, block: int = 1_000_000):
    """`simulate`'s detections and their tiles' cores, ``block`` objects at a time."""
    rng = np.random.default_rng(seed)
    ov = round(OVERLAP * TILE)
    step = TILE - ov
    density = 1 / 2500  # objects per pixel: a busy car park
    side = int(math.sqrt(n_obj / density))
    n_tiles = max(1, math.ceil((side - ov) / step))
    for start in range(0, n_obj, block):
        m = min(block, n_obj - start)
        parts, cores = [], []
        wh = rng.uniform(8, 60, (m, 2))
        xy = rng.uniform(0, n_tiles * step + ov - wh)
        obj = np.hstack([xy, xy + wh])
        i_lo = np.maximum(0, np.ceil((obj[:, 0] - TILE) / step)).astype(np.int64)
        j_lo = np.maximum(0, np.ceil((obj[:, 1] - TILE) / step)).astype(np.int64)
        for di in range(3):
            for dj in range(3):
                ti, tj = i_lo + di, j_lo + dj
                ok = (ti < n_tiles) & (tj < n_tiles) & (ti * step < obj[:, 2]) \
                    & (tj * step < obj[:, 3])
                ti, tj, o = ti[ok], tj[ok], obj[ok]
                win = np.stack([ti * step, tj * step, ti * step + TILE, tj * step + TILE], 1)
                clip = np.hstack([np.maximum(o[:, :2], win[:, :2]),
                                  np.minimum(o[:, 2:], win[:, 2:])])
                area = np.prod(clip[:, 2:] - clip[:, :2], axis=1)
                frac = area / np.prod(o[:, 2:] - o[:, :2], axis=1)
                keep = frac >= 0.3
                score = 0.5 + 0.5 * frac[keep] * rng.uniform(0.8, 1.0, keep.sum())
                tid = tj[keep] * n_tiles + ti[keep]
                parts.append(Detections.build(clip[keep], score, 0, 0, tid))
                core = np.stack([ti * step + ov / 2, tj * step + ov / 2,
                                 (ti + 1) * step + ov / 2, (tj + 1) * step + ov / 2], 1)
                core[ti == 0, 0] = core[tj == 0, 1] = -np.inf
                core[ti == n_tiles - 1, 2] = core[tj == n_tiles - 1, 3] = np.inf
                cores.append(core[keep])
        yield Detections.concat(parts), np.concatenate(cores)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def scale(sizes: list[int], global_max: int, seed: int) -> None:
    print(f"\n{'detections':>11} {'strategy':<10} {'kept':>10} {'seconds':>8} "
          f"{'peak RSS MiB':>12}")
    for n in sizes:
        dets, cores = simulate(n, seed)
        for strategy in STRATEGIES:
            if strategy != "ownership" and len(dets) > global_max:
                print(f"{len(dets):>11} {strategy:<10} {'(skipped: --global-max)':>32}")
                continue
            t = time.perf_counter()
            if strategy == "ownership":
                mine = owned(dets.centres, cores.T)
                out = merge(dets.take(mine), strategy, 0.5, 0.5, cores=cores[mine])
            else:
                out = merge(dets, strategy, 0.5, 0.5)
            seconds = time.perf_counter() - t
            print(f"{len(dets):>11} {strategy:<10} {len(out):>10} {seconds:>8.2f} "
                  f"{peak_rss_mib():>12.0f}")
        del dets, cores


def write_owned(n_target: int, seed: int, folder: Path) -> int:
    """About ``n_target`` detections as the driver receives them for the default merge
    (`simulate`'s, filtered to their tile's core as the workers filter them), written
    field by field to raw files in ``folder`` a block at a time, so that no more than
    one block is ever held here; return how many."""
    folder.mkdir(parents=True)
    n, dtypes = 0, {}
    for dets, cores in blocks(int(n_target / OWNED_PER_OBJECT), seed):
        mine = owned(dets.centres, cores.T)
        for name, array in {**{f.name: getattr(dets, f.name) for f in fields(dets)},
                            "cores": cores}.items():
            with open(folder / f"{name}.bin", "ab") as f:
                np.ascontiguousarray(array[mine]).tofile(f)
            dtypes[name] = [array.dtype.str, list(array.shape[1:])]
        n += int(mine.sum())
    (folder / "fields.json").write_text(json.dumps(dtypes))
    return n


def merge_files(folder: Path) -> dict:
    """In a fresh process: load what `write_owned` wrote, merge it by ownership and
    sort it as `geodet.detect` does; times, sizes and the process's peak memory."""
    fields_ = {name: np.fromfile(folder / f"{name}.bin", dtype=np.dtype(dt)).reshape(-1, *shape)
               for name, (dt, shape) in json.loads((folder / "fields.json").read_text()).items()}
    cores = fields_.pop("cores")
    dets = Detections(**fields_)
    del fields_
    loaded = rss_now()
    t = time.perf_counter()
    merged = merge(dets, "ownership", 0.5, 0.5, cores=cores)
    merge_s, merge_peak = time.perf_counter() - t, peak_rss_mib()
    t = time.perf_counter()
    merged.sorted()
    return {"detections": len(dets), "kept": len(merged),
            "input_mib": (sum(getattr(dets, f.name).nbytes for f in fields(dets))
                          + cores.nbytes) / 2**20,
            "loaded_mib": loaded, "merge_s": merge_s, "merge_peak_mib": merge_peak,
            "sorted_s": time.perf_counter() - t, "sorted_peak_mib": peak_rss_mib()}


def rss_now() -> float:
    """This process's resident memory now, MiB."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def driver(sizes: list[int], seed: int, work: Path | None, max_gib: float | None) -> None:
    """The default merge at scale, as the driver runs it: each size's detections are
    generated here, written to disk, and merged in a fresh process whose peak resident
    memory is the merge's (with its input and Python's own). ``max_gib``: the child's
    address space limit, so that a size that does not fit fails with a MemoryError
    rather than wake the kernel's OOM killer on a shared machine."""

    def limit() -> None:
        if max_gib:
            size = int(max_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (size, size))

    print("\n| detections in | kept | input MiB | RSS loaded MiB | merge s | peak RSS MiB "
          "(merge) | sort s | peak RSS MiB (merge + sort) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for n in sizes:
        folder = Path(tempfile.mkdtemp(prefix="geodet-merge-", dir=work)) / "owned"
        try:
            write_owned(n, seed, folder)
            child = subprocess.run([sys.executable, __file__, "--merge-files", str(folder)],
                                   capture_output=True, text=True, preexec_fn=limit)
        finally:
            shutil.rmtree(folder.parent)
        if child.returncode:
            print(f"| ~{n:,} | failed: exit {child.returncode} "
                  f"{child.stderr.strip().splitlines()[-1:] or '(killed)'} |||||||")
            continue
        r = json.loads(child.stdout.splitlines()[-1])
        print(f"| {r['detections']:,} | {r['kept']:,} | {r['input_mib']:,.0f} "
              f"| {r['loaded_mib']:,.0f} | {r['merge_s']:.1f} | {r['merge_peak_mib']:,.0f} "
              f"| {r['sorted_s']:.1f} | {r['sorted_peak_mib']:,.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["quality", "scale", "both", "driver"],
                        default="both", help="driver: the default merge alone at --sizes "
                        "as the driver runs it (not part of both)")
    parser.add_argument("--work", type=Path, help="driver: where the detections are "
                        "written (about 92 bytes each)")
    parser.add_argument("--max-gib", type=float, help="driver: the merging process's "
                        "address space limit, GiB")
    parser.add_argument("--merge-files", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", type=int, default=3072, help="quality scene side")
    parser.add_argument("--sizes", type=int, nargs="+",
                        default=[10**4, 10**5, 10**6, 10**7])
    parser.add_argument("--global-max", type=int, default=2 * 10**6,
                        help="largest input for the global strategies (nms, nmm)")
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    if args.merge_files:  # driver's child
        print(json.dumps(merge_files(args.merge_files)))
        return
    if args.part == "driver":
        driver(args.sizes, args.seed, args.work, args.max_gib)
        return
    if args.part in ("quality", "both"):
        quality(args.size, args.seed)
    if args.part in ("scale", "both"):
        scale(args.sizes, args.global_max, args.seed)


if __name__ == "__main__":
    main()
