"""Bytes on disk per detection and per tile of geodet's GeoPackage output.

    python benchmarks/output_size.py --detections 1000000 --tiles 100000

Writes, through `geodet.write.write_geopackage` and the frames `geodet.layers` makes
for a run: one GeoPackage holding only ``--detections`` detections (the merging
benchmark's simulated vehicles, 8-60 px at 10 cm in UTM, as the driver receives them,
three classes) and one holding only the tiles layer of a grid of ``--tiles`` tiles
(256 px, overlap 0.2), every tile done as recorded in a progress record. Each file
also holds the run table and the layer styles, a few KB. Prints the sizes and the
bytes per detection and per tile (as inputs for issue 13's projection).
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from merging import OWNED_PER_OBJECT, blocks  # benchmarks/, this script's own folder
from rasterio.crs import CRS
from rasterio.transform import Affine

from geodet import __version__, layers
from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.resume import ResumeRecord
from geodet.tiling import owned, plan_grid
from geodet.write import write_geopackage

NAMES = ("car", "truck", "bus")


def job_of(side: int) -> SimpleNamespace:
    """What `geodet.layers` reads of a job: one scene of ``side`` px in UTM 33N."""
    scene = SimpleNamespace(name="scene_000001.tif", crs_wkt=CRS.from_epsg(32633).to_wkt(),
                            affine=Affine(0.1, 0, 500000, 0, -0.1, 5400000))
    model = SimpleNamespace(class_name=lambda c: NAMES[c])
    return SimpleNamespace(settings=SimpleNamespace(scenes=[scene], model=model),
                           refs=[SimpleNamespace(item=None, acquired=None)], out_crs=None,
                           grids=(plan_grid(side, side, (256, 256), 0.2),))


def detections(n: int, seed: int) -> Detections:
    parts = [dets.take(owned(dets.centres, cores.T))
             for dets, cores in blocks(int(n / OWNED_PER_OBJECT * 1.02) + 1, seed)]
    dets = Detections.concat(parts).take(np.arange(n))
    classes = np.random.default_rng(seed).integers(0, len(NAMES), n).astype(np.int32)
    return Detections(dets.boxes, dets.scores, classes, dets.scene_ids, dets.tile_ids,
                      dets.angles)


def run_row() -> dict:
    return {"geodet_version": __version__, "model": "vehicles.onnx",
            "started_utc": "2026-11-25T00:00:00+00:00"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--detections", type=int, default=1_000_000)
    parser.add_argument("--tiles", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=11)
    args = parser.parse_args()
    folder = tempfile.TemporaryDirectory(prefix="geodet-size-")  # removed at exit
    work = Path(folder.name)

    dets = detections(args.detections, args.seed)
    side = max(256, int(math.sqrt(args.tiles)) * 205 + 51)
    job = job_of(side)
    one = work / "detections.gpkg"
    frames = layers.detection_frames(job, dets)
    write_geopackage(one, layers.detection_layers(job, frames), [], [run_row()], list(NAMES))

    grid = job.grids[0]
    two = work / "tiles.gpkg"
    with ResumeRecord(work / "record.gpkg", {"bench": "size"}, resume=False) as record:
        for lo in range(0, len(grid), 4096):
            ids = range(lo, min(lo + 4096, len(grid)))
            record.add(ChunkResult(Detections.empty(), tuple(
                TileOutcome(0, t, TileStatus.DONE, 3) for t in ids), "none"))
        write_geopackage(two, {}, layers.tile_layers(job, record), [run_row()], list(NAMES))
        record.finish()
    d_bytes, t_bytes = one.stat().st_size, two.stat().st_size
    print(f"| layer | features | file bytes | bytes a feature |\n| --- | ---: | ---: | ---: |\n"
          f"| detections | {len(dets):,} | {d_bytes:,} | {d_bytes / len(dets):.1f} |\n"
          f"| tiles | {len(grid):,} | {t_bytes:,} | {t_bytes / len(grid):.1f} |")


if __name__ == "__main__":
    main()
