"""Plumbing shared by the scene generators: the GeoTIFF written block by block, a
smooth ground texture, and ground truth as a GeoPackage."""

from __future__ import annotations

import os
from collections.abc import Callable

import geopandas as gpd
import numpy as np
import pyogrio
import rasterio
from rasterio.transform import from_origin

from geodet.georef import boxes_to_polygons

CRS = "EPSG:32633"
ORIGIN = (500_000.0, 5_400_000.0)
GSD = 0.10  # metres per pixel
BLOCK_ROWS = 512
COARSE = 64  # pixels per cell of the low-frequency ground texture


def smooth(rows: slice, width: int, coarse: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a coarse grid (cells of `COARSE` px, any trailing
    axes) over a block of rows: ``(rows, width, ...)``."""
    r = (np.arange(rows.start, rows.stop) + 0.5) / COARSE - 0.5
    c = (np.arange(width) + 0.5) / COARSE - 0.5
    r0 = np.clip(np.floor(r).astype(int), 0, coarse.shape[0] - 2)
    c0 = np.clip(np.floor(c).astype(int), 0, coarse.shape[1] - 2)
    fr = np.clip(r - r0, 0, 1).reshape(-1, 1, *[1] * (coarse.ndim - 2))
    fc = np.clip(c - c0, 0, 1).reshape(1, -1, *[1] * (coarse.ndim - 2))
    return (coarse[r0][:, c0] * (1 - fr) * (1 - fc) + coarse[r0 + 1][:, c0] * fr * (1 - fc)
            + coarse[r0][:, c0 + 1] * (1 - fr) * fc + coarse[r0 + 1][:, c0 + 1] * fr * fc)


def write_blocks(path: str | os.PathLike, size: int,
                 paint: Callable[[slice], np.ndarray]) -> None:
    """Write a ``size`` x ``size`` tiled, compressed RGB GeoTIFF at `GSD` in `CRS`,
    ``BLOCK_ROWS`` rows at a time; ``paint(rows)`` returns ``(3, rows, size)`` uint8."""
    profile = {
        "driver": "GTiff", "width": size, "height": size, "count": 3, "dtype": "uint8",
        "crs": CRS, "transform": from_origin(*ORIGIN, GSD, GSD), "tiled": True,
        "blockxsize": 512, "blockysize": 512, "compress": "deflate", "photometric": "RGB",
    }
    with rasterio.open(path, "w", **profile) as ds:
        for top in range(0, size, BLOCK_ROWS):
            rows = slice(top, min(top + BLOCK_ROWS, size))
            ds.write(paint(rows), window=((rows.start, rows.stop), (0, size)))


def write_truth(path: str | os.PathLike, boxes: np.ndarray, scene: str | os.PathLike,
                class_names: str | np.ndarray = "bright square") -> gpd.GeoDataFrame:
    """Write true boxes (scene pixels) of ``scene`` as a GeoPackage layer ``truth``."""
    with rasterio.open(scene) as ds:
        transform, crs = ds.transform, ds.crs
    names = np.broadcast_to(np.asarray(class_names, dtype=object), (len(boxes),))
    truth = gpd.GeoDataFrame({"class_name": list(names)},
                             geometry=boxes_to_polygons(boxes, transform), crs=crs)
    pyogrio.write_dataframe(truth, path, layer="truth", geometry_type="Polygon")
    return truth
