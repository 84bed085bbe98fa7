"""Real-world rasters side by side: a nodata border, 12-bit data, on the same objects.

    python benchmarks/real_world.py --size 3072 --border 480

One generated aerial scene (cars and trucks, bundled detector, local Ray), written
several ways; every row is scored against the same truth (IoU 0.5):

Nodata: the clean scene is the scene's centre; "border" files hold the whole scene
with everything outside that centre made invalid, so the objects are the same (those
cut by the edge of the data count when half of them is inside). Rows: the border as
black pixels the reader cannot tell from data (what geodet did before: invalid pixels
fed as 0, no box filter), as a nodata value, as an alpha band, and as a nodata value
with the box filter off (``--min-valid 0``: the fill alone).

Bit depth: the whole scene as 8-bit RGB, and as 12-bit values in uint16 with a fourth
(near-infrared) band, read with ``--bands 1,2,3``: with NBITS=12 declared, with
``--scale 0,4095``, with neither (the inferred rule), and divided by 65535 (what geodet
did before, reproduced with ``--scale 0,65535``).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
import ray
from rasterio.enums import ColorInterp
from rasterio.windows import Window

import geodet
from geodet.demo import bundled_model
from geodet.engine import LOCAL_NODE_IP
from geodet.evaluate import evaluate
from geodet.synthetic import CLASSES, vehicle_scene, write_truth


def write(path: Path, data: np.ndarray, profile: dict, **extra) -> Path:
    profile = {**profile, "count": len(data), "dtype": data.dtype.name, **extra}
    profile.pop("photometric", None)
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def nodata_cases(work: Path, size: int, border: int, seed: int):
    full = work / "full.tif"
    boxes, classes = vehicle_scene(full, size=size, seed=seed)
    inner = size - 2 * border
    with rasterio.open(full) as ds:
        profile, data = ds.profile, ds.read()
        centre = Window(border, border, inner, inner)
        clean = write(work / "clean.tif", data[:, border:-border, border:-border],
                      {**profile, "width": inner, "height": inner,
                       "transform": ds.window_transform(centre)})
    valid = np.zeros(data.shape[1:], bool)
    valid[border:-border, border:-border] = True
    black = np.where(valid, data, 0).astype(np.uint8)
    alpha = write(work / "alpha.tif", np.concatenate([data, valid[None] * np.uint8(255)]),
                  profile)
    with rasterio.open(alpha, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                          ColorInterp.alpha]
    nodata = write(work / "nodata.tif", black, profile, nodata=0)
    clipped = np.clip(boxes, border, size - border)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) >= area / 2
    truth = write_truth(work / "truth_border.gpkg", clipped[keep], full,
                        np.array(CLASSES)[classes[keep]])
    return truth, [
        ("clean scene (no border)", clean, {}),
        ("border: black, undeclared (before)", write(work / "black.tif", black, profile),
         {}),
        ("border: nodata value", nodata, {}),
        ("border: alpha band", alpha, {}),
        ("border: nodata, --min-valid 0", nodata, {"min_valid": 0.0}),
    ]


def bit_depth_cases(work: Path, size: int, seed: int):
    eight = work / "8bit.tif"
    boxes, classes = vehicle_scene(eight, size=size, seed=seed)
    truth = write_truth(work / "truth_full.gpkg", boxes, eight, np.array(CLASSES)[classes])
    with rasterio.open(eight) as ds:
        profile, rgb = ds.profile, ds.read()
    nir = np.random.default_rng(seed).integers(1500, 4096, (1, *rgb.shape[1:]))
    data = np.concatenate([np.round(rgb * (4095 / 255)), nir]).astype(np.uint16)
    nbits = write(work / "12bit_nbits.tif", data, profile, nbits=12)
    plain = write(work / "12bit_plain.tif", data, profile)
    bands = {"bands": "1,2,3"}
    return truth, [
        ("8-bit RGB", eight, {}),
        ("12-bit, /65535 (before)", plain, {**bands, "scale": "0,65535"}),
        ("12-bit, NBITS=12", nbits, bands),
        ("12-bit, --scale 0,4095", plain, {**bands, "scale": "0,4095"}),
        ("12-bit, no NBITS (inferred)", plain, bands),
    ]


def run(title: str, truth, cases) -> None:
    print(f"\n{title}\n")
    print(f"| {'input':<36} | precision | recall |     F1 | detections | tiles run |"
          " seconds | scaling |")
    print(f"| {'-' * 36} | --------: | -----: | -----: | ---------: | --------: |"
          " ------: | ------- |")
    for name, path, options in cases:
        t = time.perf_counter()
        result = geodet.detect(path, bundled_model(), progress=False, **options)
        seconds = time.perf_counter() - t
        ev = evaluate(result, truth)["all"]
        run = result.attrs["geodet"]
        scale = json.loads(run["settings"])["scale"]["source"][0]
        print(f"| {name:<36} | {ev['precision']:>9.4f} | {ev['recall']:>6.4f} | "
              f"{ev['f1']:>6.4f} | {len(result):>10} | {run['tiles_done']:>9} | "
              f"{seconds:>7.1f} | {scale} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=3072, help="scene side, pixels")
    parser.add_argument("--border", type=int, default=480, help="nodata border, pixels")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geodet-real-"))
    ray.init(address="local", _node_ip_address=LOCAL_NODE_IP, include_dashboard=False,
             logging_level="ERROR")
    try:
        run(f"Nodata border ({args.size} px scene, {args.border} px border)",
            *nodata_cases(work, args.size, args.border, args.seed))
        run(f"Bit depth ({args.size} px scene)",
            *bit_depth_cases(work, args.size, args.seed + 1))
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
