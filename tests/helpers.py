"""Shared builders for the tests: real GeoTIFFs, their footprints, progress records."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin

#: Where `write_tif` puts a scene by default: UTM 33N, 10 cm pixels.
ORIGIN = (500_000.0, 5_400_000.0)
GSD = 0.1


def write_tif(path: Path, data: np.ndarray, transform=None, crs="EPSG:32633",
              **extra) -> Path:
    """Write a (bands, rows, cols) array as a GeoTIFF."""
    if transform is None:
        transform = from_origin(*ORIGIN, GSD, GSD)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1],
               "count": data.shape[0], "dtype": data.dtype.name, "transform": transform,
               **extra}
    if crs is not None:
        profile["crs"] = crs
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(data)
    return path


def write_plain_tif(path: Path) -> Path:
    """A small GeoTIFF with neither CRS nor geotransform."""
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3,
                       dtype="uint8") as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    return path


def scene_with_squares(shape: tuple[int, int], boxes: list[tuple[int, int]], k: int = 12,
                       value: int = 240, background: int = 40, bands: int = 3) -> np.ndarray:
    """A dark scene with bright k x k squares whose top-left corners are ``boxes``."""
    data = np.full((bands, *shape), background, dtype=np.uint8)
    for x, y in boxes:
        data[:, y:y + k, x:x + k] = value
    return data


def footprint(x: float, y: float, k: int = 12) -> shapely.Polygon:
    """The CRS footprint of a k x k square whose top-left pixel is (x, y), in a scene
    written by `write_tif` with its default transform."""
    return shapely.box(ORIGIN[0] + x * GSD, ORIGIN[1] - (y + k) * GSD,
                       ORIGIN[0] + (x + k) * GSD, ORIGIN[1] - y * GSD)


def corrupt_block(path: Path, row: int, col: int) -> None:
    """Overwrite the compressed bytes of one internal block of a tiled GeoTIFF."""
    with rasterio.open(path) as ds:
        offset = int(ds.get_tag_item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1))
        size = int(ds.get_tag_item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1))
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write((b"\xff\x00garbage" * (size // 9 + 1))[:size])


def tiles_recorded(progress: Path) -> int:
    """How many tiles a run's progress record holds (0 while it does not exist)."""
    try:
        with sqlite3.connect(f"file:{progress}?mode=ro", uri=True) as db:
            return db.execute("SELECT count(*) FROM tiles").fetchone()[0]
    except sqlite3.Error:
        return 0


def squares_everywhere(tmp_path: Path, size: int = 1600) -> Path:
    """A scene dense with squares, so that every tile has work (slow enough to kill)."""
    rng = np.random.default_rng(1)
    corners = sorted({(int(x), int(y)) for x, y in rng.integers(0, size - 20, (900, 2)) // 16
                      * 16})
    return write_tif(tmp_path / "s.tif", scene_with_squares((size, size), corners))


def pixel_boxes(frame, transform) -> np.ndarray:
    """Polygon bounds as (col0, row0, col1, row1) in the pixels of a north-up
    ``transform``: the pixels the bounds fall in."""
    x0, y0, x1, y1 = shapely.bounds(frame.geometry.values).T
    inv = ~transform
    cols = inv.a * np.stack([x0, x1]) + inv.c
    rows = inv.e * np.stack([y1, y0]) + inv.f
    return np.floor(np.stack([cols[0], rows[0], cols[1], rows[1]], axis=1)).astype(int)


def run_error(capsys, args: list) -> str:
    """Run the CLI in-process, expect exit code 2 and one line on stderr."""
    from geodet.cli import main

    code = main([str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("geodet: error: "), err
    assert "Traceback" not in err
    return lines[0]
