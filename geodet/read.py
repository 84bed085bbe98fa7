"""Reading tiles: which tiles hold data, and windowed reads resampled for the model.

Pixels are only ever read through windows; a whole scene is never loaded. Each
detector process keeps one open dataset per scene and reuses it.
"""

from __future__ import annotations

import math
import time

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from geodet.errors import one_line
from geodet.scene import SceneInfo
from geodet.tiling import Grid, TileSpec

#: The longest side of the low-resolution mask used to find tiles without data.
MASK_PLAN_SIDE = 2048
READ_ATTEMPTS = 3
READ_BACKOFF_S = 0.1


def tiles_with_data(scene: SceneInfo, grid: Grid) -> np.ndarray:
    """Which tiles of ``grid`` hold at least one valid pixel (a bool per tile id),
    judged on a low-resolution mask.

    The mask is averaged down (any valid pixel keeps its cell non-zero, up to cells
    of a few hundred pixels a side), and a tile counts as empty only when every cell
    it touches, and one cell around when reduced, is empty: small valid areas are not
    skipped. Vectorised over the grid's rows and columns with a summed-area table, so
    millions of tiles cost seconds.
    """
    if not scene.has_mask:
        return np.ones(len(grid), dtype=bool)
    f = max(1.0, max(scene.width, scene.height) / MASK_PLAN_SIDE)
    shape = (max(1, math.ceil(scene.height / f)), max(1, math.ceil(scene.width / f)))
    with rasterio.open(scene.path) as ds:
        mask = ds.dataset_mask(out_shape=shape, resampling=Resampling.average) > 0
    table = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = mask.cumsum(0).cumsum(1)
    pad = 1 if f > 1 else 0  # at full resolution the mask is exact

    def cells(starts: tuple[int, ...], tile: int, length: int, cells: int):
        s = np.asarray(starts)
        scale = cells / length
        lo = np.maximum(0, (s * scale).astype(np.int64) - pad)
        hi = np.minimum(cells, np.ceil(np.minimum(s + tile, length) * scale).astype(np.int64)
                        + pad)
        return lo, hi

    c0, c1 = cells(grid.xs, grid.tile[0], scene.width, shape[1])
    r0, r1 = cells(grid.ys, grid.tile[1], scene.height, shape[0])
    has_data = np.empty((len(r0), len(c0)), dtype=bool)
    for j in range(len(r0)):  # a row of tiles at a time: memory follows one row
        has_data[j] = (table[r1[j], c1] - table[r0[j], c1] - table[r1[j], c0]
                       + table[r0[j], c0]) > 0
    return has_data.reshape(-1)


class TileReader:
    """Reads tiles with windowed reads, one open dataset per scene per process."""

    def __init__(self, scenes: list[SceneInfo]) -> None:
        self._scenes = scenes
        self._open: dict[int, rasterio.DatasetReader] = {}

    def _dataset(self, scene: int) -> rasterio.DatasetReader:
        if scene not in self._open:
            self._open[scene] = rasterio.open(self._scenes[scene].path)
        return self._open[scene]

    def read(self, spec: TileSpec, out_size: tuple[int, int],
             tile: tuple[int, int]) -> tuple[np.ndarray, tuple[float, float]]:
        """Read one tile as a ``(bands, out_h, out_w)`` array in the scene's dtype.

        The nominal ``tile`` (w, h) in source pixels is resampled to ``out_size``
        (w, h); a window smaller than the tile (a raster smaller than one tile) is
        read at the same scale and padded with zeros on the right and bottom.
        Invalid pixels (nodata, alpha, mask) are zero. Returns the array and the
        scale ``(sx, sy)`` in output pixels per source pixel.
        """
        info, ds = self._scenes[spec.scene], self._dataset(spec.scene)
        sx, sy = out_size[0] / tile[0], out_size[1] / tile[1]
        w = min(out_size[0], max(1, round(spec.width * sx)))
        h = min(out_size[1], max(1, round(spec.height * sy)))
        window = Window(spec.col_off, spec.row_off, spec.width, spec.height)
        resampling = Resampling.nearest if (w, h) == (spec.width, spec.height) \
            else Resampling.bilinear
        data = ds.read(list(info.bands), window=window, out_shape=(len(info.bands), h, w),
                       resampling=resampling)
        if info.has_mask:
            valid = ds.dataset_mask(window=window, out_shape=(h, w)) > 0
            data[:, ~valid] = 0
        if (w, h) != out_size:
            data = np.pad(data, ((0, 0), (0, out_size[1] - h), (0, out_size[0] - w)))
        return data, (w / spec.width, h / spec.height)

    def try_read(self, spec: TileSpec, out_size: tuple[int, int], tile: tuple[int, int]
                 ) -> tuple[np.ndarray | None, tuple[float, float] | None, str]:
        """`read`, tried `READ_ATTEMPTS` times in all with a fresh dataset handle
        (remote reads fail transiently); returns ``(array, scale, "")``, or
        ``(None, None, reason)`` when every attempt failed."""
        for attempt in range(READ_ATTEMPTS):
            try:
                arr, scale = self.read(spec, out_size, tile)
                return arr, scale, ""
            except Exception as e:  # a corrupt block must not sink the other tiles
                error = e
                self._forget(spec.scene)
                time.sleep(READ_BACKOFF_S * 2 ** attempt)
        return None, None, one_line(f"read failed {READ_ATTEMPTS} times", error)

    def _forget(self, scene: int) -> None:
        """Close a scene's dataset; the next read opens it afresh."""
        ds = self._open.pop(scene, None)
        if ds is not None:
            ds.close()
