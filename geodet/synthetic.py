"""Deterministic sample scenes with known ground truth.

`bright_squares_scene` writes a tiled, compressed RGB GeoTIFF (UTM zone 33N, 0.10 m
per pixel) of textured ground with bright ``square`` x ``square`` targets, scattered
or packed in rows a few pixels apart, row block by row block, so scenes far larger
than memory can be generated. The ground truth is returned as scene-pixel boxes and
can be written as a GeoPackage.
"""

from __future__ import annotations

import os

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
from rasterio.transform import from_origin

from geodet.georef import boxes_to_polygons

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_400_000.0)
GSD = 0.10
BLOCK_ROWS = 512
COARSE = 64  # pixels per cell of the low-frequency background texture


def _targets(size: int, square: int, rng: np.random.Generator) -> np.ndarray:
    """Boxes (N, 4) of non-touching squares: bands of scattered squares, and bands of
    packed rows (like parked cars) with gaps of 2 to 4 pixels between squares."""
    band = 4 * square
    boxes = []
    for top in range(0, size - band + 1, band):
        if rng.random() < 0.25:  # a band of packed rows
            y = top + int(rng.integers(0, band - square - 1))
            x = int(rng.integers(0, band))
            while x + square <= size:
                run = int(rng.integers(3, 15))
                for _ in range(run):
                    if x + square > size:
                        break
                    boxes.append((x, y))
                    x += square + int(rng.integers(2, 5))
                x += int(rng.integers(square, 6 * square))
        else:  # scattered: at most one square in each band x band cell
            for left in range(0, size - band + 1, band):
                if rng.random() < 0.5:
                    jx, jy = rng.integers(0, band - square - 1, size=2)
                    boxes.append((left + int(jx), top + int(jy)))
    xy = np.array(boxes, dtype=np.float64).reshape(-1, 2)
    return np.hstack([xy, xy + square])


def _ground(rows: slice, size: int, coarse: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Background grey levels (0..1) for a block of rows: smooth fields plus grain."""
    r = (np.arange(rows.start, rows.stop) + 0.5) / COARSE - 0.5
    c = (np.arange(size) + 0.5) / COARSE - 0.5
    r0 = np.clip(np.floor(r).astype(int), 0, coarse.shape[0] - 2)
    c0 = np.clip(np.floor(c).astype(int), 0, coarse.shape[1] - 2)
    fr, fc = np.clip(r - r0, 0, 1)[:, None], np.clip(c - c0, 0, 1)[None, :]
    g = (coarse[r0][:, c0] * (1 - fr) * (1 - fc) + coarse[r0 + 1][:, c0] * fr * (1 - fc)
         + coarse[r0][:, c0 + 1] * (1 - fr) * fc + coarse[r0 + 1][:, c0 + 1] * fr * fc)
    return g + rng.normal(0, 0.02, g.shape)


def bright_squares_scene(path: str | os.PathLike, size: int = 4096, seed: int = 0,
                         square: int = 12) -> np.ndarray:
    """Write the scene to ``path``; return the true boxes ``(N, 4)`` in scene pixels."""
    rng = np.random.default_rng(seed)
    boxes = _targets(size, square, rng)
    colours = rng.integers(215, 256, size=(len(boxes), 3))
    n_coarse = size // COARSE + 2
    coarse = rng.uniform(0.08, 0.32, size=(n_coarse, n_coarse))
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "crs": CRS, "transform": from_origin(*ORIGIN, GSD, GSD), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "compress": "deflate", "photometric": "RGB",
    }
    with rasterio.open(path, "w", **profile) as ds:
        for top in range(0, size, BLOCK_ROWS):
            rows = slice(top, min(top + BLOCK_ROWS, size))
            block_rng = np.random.default_rng([seed, top])
            grey = _ground(rows, size, coarse, block_rng)
            tint = np.array([1.0, 0.95, 0.85])[:, None, None]
            block = np.clip(grey[None] * tint * 255, 0, 255).astype(np.uint8)
            hit = (boxes[:, 1] < rows.stop) & (boxes[:, 3] > rows.start)
            for (x0, y0, x1, y1), colour in zip(boxes[hit].astype(int), colours[hit],
                                                strict=True):
                r0, r1 = max(y0, rows.start) - top, min(y1, rows.stop) - top
                block[:, r0:r1, x0:x1] = colour[:, None, None]
            ds.write(block, window=((rows.start, rows.stop), (0, size)))
    return boxes


def write_truth(path: str | os.PathLike, boxes: np.ndarray, scene: str | os.PathLike,
                class_name: str = "bright square") -> gpd.GeoDataFrame:
    """Write true boxes of ``scene`` as a GeoPackage layer ``truth``."""
    with rasterio.open(scene) as ds:
        transform, crs = ds.transform, ds.crs
    truth = gpd.GeoDataFrame({"class_name": [class_name] * len(boxes)},
                             geometry=boxes_to_polygons(boxes, transform), crs=crs)
    pyogrio.write_dataframe(truth, path, layer="truth", geometry_type="Polygon")
    return truth
