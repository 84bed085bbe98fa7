"""Wall time and memory of `geodet detect` on a generated scene of N x N pixels.

    python benchmarks/big_scene.py --size 10000

Generates an aerial scene with cars and trucks once (kept in --workdir), runs the
CLI in a fresh process with the bundled detector, samples the resident memory of the
whole process tree (driver, Ray services, workers) every 0.2 s from /proc, and
prints one table row per size.
Memory should stay flat as the scene grows: it is bounded by the tiles in flight.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from geodet.demo import bundled_model
from geodet.synthetic import vehicle_scene

PAGE = os.sysconf("SC_PAGE_SIZE")


def tree_rss(root: int) -> tuple[int, int]:
    """(RSS of `root`, summed RSS of root and all its descendants), in bytes."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ppid, pages = int(fields[1]), int(fields[21])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * PAGE
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += rss.get(pid, 0)
        stack.extend(children.get(pid, []))
    return rss.get(root, 0), total


def measure(scene: Path, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "geodet", "detect", str(scene), "--model", bundled_model(),
           "--out", str(out), "--overwrite", "--no-progress", *extra]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    peak_driver = peak_tree = 0
    while proc.poll() is None:
        driver, tree = tree_rss(proc.pid)
        peak_driver, peak_tree = max(peak_driver, driver), max(peak_tree, tree)
        time.sleep(0.2)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"geodet failed ({proc.returncode}): {stderr}")
    return {"wall_s": wall, "driver_mib": peak_driver / 2**20, "tree_mib": peak_tree / 2**20,
            "summary": stdout.strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs="+", default=[10000])
    parser.add_argument("--workdir", default="/tmp/geodet-bench")
    args, extra = parser.parse_known_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    print(f"{'size':>7} {'MPix':>7} {'wall s':>7} {'MPix/s':>7} {'driver MiB':>11} "
          f"{'tree MiB':>9}  summary")
    for size in args.size:
        scene = work / f"scene{size}.tif"
        if not scene.exists():  # generated under another name: no half-written reuse
            partial = scene.with_suffix(".partial.tif")
            vehicle_scene(partial, size=size, seed=size)
            partial.replace(scene)
        r = measure(scene, work / f"out{size}.gpkg", extra)
        mpix = size * size / 1e6
        print(f"{size:>7} {mpix:>7.0f} {r['wall_s']:>7.1f} {mpix / r['wall_s']:>7.1f} "
              f"{r['driver_mib']:>11.0f} {r['tree_mib']:>9.0f}  {r['summary']}")


if __name__ == "__main__":
    main()
