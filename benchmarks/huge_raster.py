"""A raster of 10^12 pixels: how soon tiles are dispatched, and the memory of the
whole process tree while they are.

    python -m benchmarks.huge_raster --side 1000000 --seconds 60

Builds a VRT declaring ``side`` x ``side`` pixels at 10 cm over a small generated
GeoTIFF (the rest of the raster reads as zeros), runs ``geodet detect`` on it with the
bundled detector in a subprocess, and samples the resident memory of the driver and
every process it started (Ray's included) until ``--seconds`` after the first tile
is recorded; then stops the run with SIGINT. Prints the number of tiles, the time to
the first recorded tile, the tiles recorded, and the peak memory of the tree.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

from geodet.demo import bundled_model
from geodet.synthetic import vehicle_scene
from tests.helpers import tiles_recorded

VRT = """<VRTDataset rasterXSize="{side}" rasterYSize="{side}">
  <SRS>EPSG:32633</SRS>
  <GeoTransform>500000, 0.1, 0, 5400000, 0, -0.1</GeoTransform>
{bands}</VRTDataset>
"""
BAND = """  <VRTRasterBand dataType="Byte" band="{b}">
    <SimpleSource>
      <SourceFilename relativeToVRT="1">small.tif</SourceFilename>
      <SourceBand>{b}</SourceBand>
      <SrcRect xOff="0" yOff="0" xSize="{n}" ySize="{n}"/>
      <DstRect xOff="0" yOff="0" xSize="{n}" ySize="{n}"/>
    </SimpleSource>
  </VRTRasterBand>
"""


def tree_rss(root: psutil.Process) -> int:
    """Resident bytes of ``root`` and all its descendants (Ray's workers included)."""
    total = 0
    for p in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geodet-huge-"))
    n = 1024
    vehicle_scene(work / "small.tif", size=n, seed=5)
    (work / "huge.vrt").write_text(VRT.format(
        side=args.side, bands="".join(BAND.format(b=b, n=n) for b in (1, 2, 3))))
    out, progress = work / "out.gpkg", work / "out.gpkg.progress"
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    t0 = time.perf_counter()
    run = subprocess.Popen([sys.executable, "-m", "geodet", "detect", str(work / "huge.vrt"),
                            "--model", bundled_model(), "--out", str(out)],
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, start_new_session=True)
    root, peak, first, end = psutil.Process(run.pid), 0, None, None
    while run.poll() is None and (end is None or time.perf_counter() < end):
        peak = max(peak, tree_rss(root))
        if first is None and tiles_recorded(progress) > 0:
            first = time.perf_counter() - t0
            end = time.perf_counter() + args.seconds
        time.sleep(0.2)
    done = tiles_recorded(progress)
    os.killpg(run.pid, signal.SIGINT)
    try:
        _, err = run.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(run.pid, signal.SIGKILL)
        _, err = run.communicate()
    total = [line for line in err.replace("\r", "\n").splitlines() if "/" in line]
    print(f"raster {args.side} x {args.side} ({args.side ** 2 / 1e12:.2f} x 10^12 px)")
    print(f"progress line: {total[-1].strip() if total else '(none)'}")
    print(f"first tile recorded after {first:.1f} s" if first else "no tile recorded")
    print(f"tiles recorded in {args.seconds:.0f} s after that: {done}")
    print(f"peak memory of the process tree: {peak / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
