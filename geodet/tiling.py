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
from collections.abc import Iterable
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


def plan_tiles(width: int, height: int, tile: tuple[int, int], overlap: float,
               scene: int = 0) -> list[TileSpec]:
    """The row-major grid of tiles for a ``width`` x ``height`` raster.

    ``tile`` is ``(tile_width, tile_height)`` in source pixels, ``overlap`` a fraction
    of the tile in ``[0, 1)``.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    tw, th = tile
    xs = axis_starts(width, tw, min(round(overlap * tw), tw - 1))
    ys = axis_starts(height, th, min(round(overlap * th), th - 1))
    xe, ye = core_edges(xs, width, tw), core_edges(ys, height, th)
    specs = []
    for j, y in enumerate(ys):
        for i, x in enumerate(xs):
            specs.append(TileSpec(
                scene=scene, tile_id=j * len(xs) + i,
                col_off=x, row_off=y, width=min(tw, width - x), height=min(th, height - y),
                core=(xe[i], ye[j], xe[i + 1], ye[j + 1]),
            ))
    return specs


def owned(centres: np.ndarray, core: tuple[float, float, float, float]) -> np.ndarray:
    """Mask of the centres ``(N, 2)`` that lie in a half-open core ``[x0, x1) x [y0, y1)``."""
    x0, y0, x1, y1 = core
    cx, cy = centres[:, 0], centres[:, 1]
    return (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)


def cores_of(tiles: Iterable[TileSpec], scene_ids: np.ndarray,
             tile_ids: np.ndarray) -> np.ndarray:
    """The core ``(N, 4)`` of the tile of each ``(scene_ids[k], tile_ids[k])``."""
    tiles = list(tiles)
    n_scenes = max((t.scene for t in tiles), default=-1) + 1
    n_tiles = max((t.tile_id for t in tiles), default=-1) + 1
    table = np.zeros((n_scenes, n_tiles, 4))
    for t in tiles:
        table[t.scene, t.tile_id] = t.core
    return table[scene_ids, tile_ids]
