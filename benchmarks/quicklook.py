"""Wall time and memory of the quick-look of `geodet report` on an N x N scene.

    python benchmarks/quicklook.py --size 32768

Writes the scene once (kept in --workdir): one generated 4096 x 4096 aerial scene with
cars and trucks, repeated to N x N pixels (generating a gigapixel scene directly
takes the best part of an hour on two cores), with overviews built by rasterio's
``build_overviews`` (factors 2, 4, ... down to 256 px). Runs ``geodet detect`` on it
once, then runs ``geodet report OUT --png`` in a fresh process and prints its wall
time, its CPU time and its peak resident memory (from the kernel's rusage). The
quick-look reads the scene from its overviews, so it should take seconds and little
memory whatever the scene's size.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from geodet.demo import bundled_model
from geodet.synthetic import vehicle_scene

SMALLEST_OVERVIEW = 256  # pixels on the longest side
UNIT = 4096  # side of the generated scene that is repeated


def scene_with_overviews(path: Path, size: int) -> None:
    """Write the repeated scene and its overviews under another name, then rename
    it: a half-written scene is never reused."""
    unit, partial = path.with_suffix(".unit.tif"), path.with_suffix(".partial.tif")
    vehicle_scene(unit, size=UNIT, seed=0)
    with rasterio.open(unit) as src:
        profile = {**src.profile, "width": size, "height": size, "BIGTIFF": "YES",
                   "NUM_THREADS": "ALL_CPUS"}
        with rasterio.open(partial, "w", **profile) as dst:
            rows = src.profile["blockysize"]
            for top in range(0, UNIT, rows):
                block = src.read(window=Window(0, top, UNIT, rows))
                for y in range(0, size, UNIT):
                    for x in range(0, size, UNIT):
                        dst.write(block, window=Window(x, y + top, UNIT, rows))
    factors = [2 ** k for k in range(1, 20) if size >> k >= SMALLEST_OVERVIEW]
    with rasterio.open(partial, "r+") as ds:
        ds.build_overviews(factors, Resampling.average)
    partial.replace(path)
    unit.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32768)
    parser.add_argument("--png-size", type=int, default=2048,
                        help="longest side of the quick-look (geodet report --size)")
    parser.add_argument("--workdir", default="/tmp/geodet-quicklook")
    args = parser.parse_args()
    if args.size % UNIT:
        parser.error(f"--size must be a multiple of {UNIT}")
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    scene, out = work / f"scene{args.size}.tif", work / f"out{args.size}.gpkg"
    if not scene.exists():
        t0 = time.perf_counter()
        scene_with_overviews(scene, args.size)
        print(f"scene and overviews written in {time.perf_counter() - t0:.0f} s")
    if not out.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "geodet", "detect", str(scene), "--model",
                        bundled_model(), "--out", str(out), "--no-progress"], check=True)
        print(f"detected in {time.perf_counter() - t0:.0f} s")

    png = work / f"quicklook{args.size}.png"
    cmd = [sys.executable, "-m", "geodet", "report", str(out), "--png", str(png),
           "--size", str(args.png_size), "--json"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)  # the child's own CPU time and peak memory
    wall = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"geodet report failed: {stderr}")
    [drawn] = json.loads(stdout)["quicklook"]["scenes"]
    print(f"{'size':>7} {'MPix':>6} {'png':>11} {'detections':>10} {'wall s':>7} "
          f"{'CPU s':>6} {'peak RSS MiB':>12}")
    print(f"{args.size:>7} {args.size ** 2 / 1e6:>6.0f} {'x'.join(map(str, drawn['size'])):>11} "
          f"{drawn['detections']:>10} {wall:>7.1f} {usage.ru_utime + usage.ru_stime:>6.1f} "
          f"{usage.ru_maxrss / 1024:>12.0f}")


if __name__ == "__main__":
    main()
