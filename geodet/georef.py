"""Georeferencing: tile pixels -> scene pixels -> polygons in the scene's CRS.

Pixel-edge convention: ``transform * (col, row)`` is the *corner* of a pixel, so the
box ``[0, 0, 1, 1]`` maps to exactly the footprint of the first pixel. All four
corners go through the full affine transform, so rotated and sheared rasters give
the correct (rotated) quadrilaterals.
"""

from __future__ import annotations

import numpy as np
import shapely
from affine import Affine

from geodet.tiling import TileSpec


def pixel_to_crs(transform: Affine, cols: np.ndarray, rows: np.ndarray):
    a, b, c, d, e, f = tuple(transform)[:6]
    return a * cols + b * rows + c, d * cols + e * rows + f


def boxes_to_polygons(boxes: np.ndarray, transform: Affine,
                      angles: np.ndarray | None = None) -> np.ndarray:
    """Polygons (shapely array) for ``(N, 4)`` x0 y0 x1 y1 scene-pixel boxes, each
    turned by ``angles`` (radians, clockwise on the image) about its centre."""
    x0, y0, x1, y1 = boxes.T
    cols = np.stack([x0, x1, x1, x0, x0], axis=1)
    rows = np.stack([y0, y0, y1, y1, y0], axis=1)
    if angles is not None and np.any(angles):
        cx, cy = ((x0 + x1) / 2)[:, None], ((y0 + y1) / 2)[:, None]
        cos, sin = np.cos(angles)[:, None], np.sin(angles)[:, None]
        dx, dy = cols - cx, rows - cy
        cols, rows = cx + dx * cos - dy * sin, cy + dx * sin + dy * cos
    xs, ys = pixel_to_crs(transform, cols, rows)
    return shapely.polygons(np.stack([xs, ys], axis=-1))


def polygons_to_boxes(polygons: np.ndarray, transform: Affine) -> np.ndarray:
    """The ``(N, 4)`` scene-pixel boxes x0 y0 x1 y1 that hold each polygon (in the
    scene's CRS): the inverse of `boxes_to_polygons` for upright boxes."""
    inverse = ~transform
    pixels = shapely.transform(polygons, lambda xy: np.stack(
        pixel_to_crs(inverse, xy[:, 0], xy[:, 1]), axis=1))
    return shapely.bounds(pixels).reshape(-1, 4)


def tile_to_scene(boxes: np.ndarray, angles: np.ndarray, scale: tuple[float, float],
                  spec: TileSpec) -> np.ndarray:
    """Boxes in a tile's model input -> scene pixels, clipped to the tile's window.

    ``scale`` is ``(sx, sy)`` model pixels per scene pixel. Oriented boxes
    (``angles != 0``) are not clipped: they are not rectangles in the scene's grid.
    """
    sx, sy = scale
    boxes = boxes / np.array([sx, sy, sx, sy])
    boxes += np.array([spec.col_off, spec.row_off, spec.col_off, spec.row_off])
    x0, y0, x1, y1 = spec.bounds
    upright = angles == 0
    boxes[upright] = np.clip(boxes[upright], [x0, y0, x0, y0], [x1, y1, x1, y1])
    return boxes
