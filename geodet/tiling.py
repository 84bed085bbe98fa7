"""Tile planning: pure functions from a raster's size to overlapping windows.

Every pixel is covered; consecutive tiles overlap by ``round(overlap * tile)``
pixels (more for the last one, which sits flush with the raster's edge); no tile
reaches past the raster unless the raster is smaller than a tile, and then the single
window along that axis is the whole axis (the reader pads it).

Each tile also owns a *core*: the cores partition the scene (boundaries at the middle
of each overlap), so a detection can be owned by exactly one tile -- the one whose
core holds its centre.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TileSpec:
    """One tile of one scene: a source window and the core it owns (scene pixels)."""

    scene: int
    tile_id: int
    col_off: int
    row_off: int
    width: int
    height: int
    core: tuple[float, float, float, float]  # x0, y0, x1, y1; -inf/inf at scene edges

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        return (self.col_off, self.row_off, self.col_off + self.width,
                self.row_off + self.height)


def axis_starts(length: int, tile: int, overlap_px: int) -> list[int]:
    """Start offsets of windows of size ``tile`` along an axis of ``length`` pixels."""
    if length < 1 or tile < 1:
        raise ValueError("length and tile must be positive")
    if not 0 <= overlap_px < tile:
        raise ValueError("overlap must be at least 0 and smaller than the tile")
    if length <= tile:
        return [0]
    step = tile - overlap_px
    n = math.ceil((length - tile) / step) + 1
    starts = [min(i * step, length - tile) for i in range(n)]
    return sorted(set(starts))


def core_edges(starts: list[int], length: int, tile: int) -> list[float]:
    """Boundaries between consecutive cores: the middle of each overlap."""
    ends = [min(s + tile, length) for s in starts]
    inner = [(starts[i + 1] + ends[i]) / 2 for i in range(len(starts) - 1)]
    return [-math.inf, *inner, math.inf]


@dataclass(frozen=True)
class Grid:
    """The row-major grid of one scene's tiles, computed on demand: a raster of any
    size costs two short lists of offsets, never one object per tile."""

    scene: int
    width: int
    height: int
    tile: tuple[int, int]  # (w, h) source pixels
    xs: tuple[int, ...]  # column starts
    ys: tuple[int, ...]  # row starts
    xe: tuple[float, ...]  # core edges along x (len(xs) + 1)
    ye: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.xs) * len(self.ys)

    def __getitem__(self, tile_id: int) -> TileSpec:
        if not 0 <= tile_id < len(self):
            raise IndexError(tile_id)
        j, i = divmod(tile_id, len(self.xs))
        x, y = self.xs[i], self.ys[j]
        tw, th = self.tile
        return TileSpec(scene=self.scene, tile_id=tile_id, col_off=x, row_off=y,
                        width=min(tw, self.width - x), height=min(th, self.height - y),
                        core=(self.xe[i], self.ye[j], self.xe[i + 1], self.ye[j + 1]))

    def __iter__(self) -> Iterator[TileSpec]:
        return (self[k] for k in range(len(self)))

    def _ij(self, tile_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        j, i = np.divmod(np.asarray(tile_ids, dtype=np.int64), len(self.xs))
        return i, j

    def bounds(self, tile_ids: np.ndarray) -> np.ndarray:
        """Windows ``(N, 4)`` x0 y0 x1 y1 of the tiles ``tile_ids``, vectorised."""
        i, j = self._ij(tile_ids)
        x0, y0 = np.asarray(self.xs)[i], np.asarray(self.ys)[j]
        return np.stack([x0, y0, np.minimum(x0 + self.tile[0], self.width),
                         np.minimum(y0 + self.tile[1], self.height)], axis=1).astype(float)

    def owners(self, points: np.ndarray) -> np.ndarray:
        """The tile id whose core holds each of the points ``(N, 2)`` (scene pixels;
        the cores partition the plane, so every point has one)."""
        i = np.searchsorted(self.xe, points[:, 0], side="right") - 1
        j = np.searchsorted(self.ye, points[:, 1], side="right") - 1
        nx, ny = len(self.xs), len(self.ys)
        return np.clip(j, 0, ny - 1).astype(np.int64) * nx + np.clip(i, 0, nx - 1)

    def cores(self, tile_ids: np.ndarray) -> np.ndarray:
        """Cores ``(N, 4)`` of the tiles ``tile_ids``, vectorised."""
        i, j = self._ij(tile_ids)
        xe, ye = np.asarray(self.xe), np.asarray(self.ye)
        return np.stack([xe[i], ye[j], xe[i + 1], ye[j + 1]], axis=1)


def plan_grid(width: int, height: int, tile: tuple[int, int], overlap: float,
              scene: int = 0, extent: tuple[int, int, int, int] | None = None) -> Grid:
    """The tiles for a ``width`` x ``height`` raster: ``tile`` is ``(tile_width,
    tile_height)`` in source pixels, ``overlap`` a fraction of the tile in ``[0, 1)``.
    ``extent``: the window ``(x0, y0, x1, y1)`` to cover (the raster's valid data),
    with the first and last tiles flush with its edges; by default the raster."""
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    tw, th = tile
    x0, y0, x1, y1 = extent or (0, 0, width, height)
    xs = [x0 + s for s in axis_starts(x1 - x0, tw, min(round(overlap * tw), tw - 1))]
    ys = [y0 + s for s in axis_starts(y1 - y0, th, min(round(overlap * th), th - 1))]
    return Grid(scene, width, height, (tw, th), tuple(xs), tuple(ys),
                tuple(core_edges(xs, x1, tw)), tuple(core_edges(ys, y1, th)))


def plan_tiles(width: int, height: int, tile: tuple[int, int], overlap: float,
               scene: int = 0) -> list[TileSpec]:
    """Every tile of `plan_grid`, as a list."""
    return list(plan_grid(width, height, tile, overlap, scene))


def owned(centres: np.ndarray, core: tuple[float, float, float, float]) -> np.ndarray:
    """Mask of the centres ``(N, 2)`` that lie in a half-open core ``[x0, x1) x [y0, y1)``."""
    x0, y0, x1, y1 = core
    cx, cy = centres[:, 0], centres[:, 1]
    return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
