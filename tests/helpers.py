"""Helpers for building real test scenes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.transform import from_origin


def write_tif(path: Path, data: np.ndarray, transform=None, crs="EPSG:32633",
              **extra) -> Path:
    """Write a (bands, rows, cols) array as a GeoTIFF."""
    if transform is None:
        transform = from_origin(500_000, 5_400_000, 0.1, 0.1)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype.name, "transform": transform,
               **extra}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def scene_with_squares(shape: tuple[int, int], boxes: list[tuple[int, int]], k: int = 12,
                       value: int = 240, background: int = 40, bands: int = 3) -> np.ndarray:
    """A dark scene with bright k x k squares whose top-left corners are ``boxes``."""
    data = np.full((bands, *shape), background, dtype=np.uint8)
    for x, y in boxes:
        data[:, y:y + k, x:x + k] = value
    return data
