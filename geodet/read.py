"""Reading tiles: which tiles hold data, and windowed reads resampled for the model.

Pixels are only ever read through windows; a whole scene is never loaded. Each
reader keeps one open dataset per scene and reuses it. A tile comes back with the
scene's own values (scaled for the model by `geodet.preprocess`), its invalid pixels
filled with the scene's fill, and which pixels are valid.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.windows import Window

from geodet.blocks import Block, Blocks
from geodet.jpeg import TurboJpeg
from geodet.scene import SceneInfo
from geodet.tiling import Grid, TileSpec

#: GDAL's block cache for each process that reads, unless GDAL_CACHEMAX says otherwise
#: (set before GDAL first reads, hence here): tiles reuse only the blocks they share
#: with their neighbours, about a row of blocks, so GDAL's default (5% of the RAM)
#: would only make memory grow with the scene.
os.environ.setdefault("GDAL_CACHEMAX", "256MB")

#: The longest side of the low-resolution mask used to find tiles without data.
MASK_PLAN_SIDE = 2048
#: The largest mask cell (scene pixels a side) for which the data's extent is made
#: exact from full-resolution strips (rasters up to 16384 pixels a side).
EXACT_EDGE_CELLS = 8
#: The smallest block side that tiles are cut from (`geodet.blocks`): smaller blocks,
#: such as a VRT's 128 px, cost more in calls than sharing them saves in decoding.
MIN_BLOCK_SIDE = 256
READ_ATTEMPTS = 3  # for remote scenes; a local read error is final
READ_BACKOFF_S = 0.1
REASON_CHARS = 500
#: GDAL paths and URL schemes read over a network.
REMOTE_PREFIXES = ("/vsicurl", "/vsis3", "/vsigs", "/vsiaz", "/vsiadls", "/vsioss",
                   "/vsiswift", "/vsihdfs", "/vsiwebhdfs")


def is_remote(path: str) -> bool:
    return path.startswith(REMOTE_PREFIXES) or "://" in path


def gdal_reason(error: BaseException) -> str:
    """GDAL's own messages behind a rasterio error, which only says "Read failed. See
    previous exception": the first names file, band and block, the last the cause."""
    chain, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        chain.append(str(error).strip() or type(error).__name__)
        error = error.__cause__ or error.__context__
    gdal = [m for m in chain if "See previous exception" not in m] or chain
    return gdal[0] if len(gdal) == 1 else f"{gdal[0]} ({gdal[-1]})"


@dataclass(frozen=True)
class DataMask:
    """Where a scene has valid pixels, at low resolution: ``cells`` (rows x cols) of
    ``factor`` scene pixels a side, averaged down (any valid pixel keeps its cell
    non-zero, up to cells of a few hundred pixels a side)."""

    cells: np.ndarray
    factor: float

    @property
    def exact(self) -> bool:
        return self.factor == 1.0


def data_mask(scene: SceneInfo) -> DataMask | None:
    """The scene's `DataMask`; None when every pixel is valid (no nodata, alpha or
    mask)."""
    if not scene.has_mask:
        return None
    f = max(1.0, max(scene.width, scene.height) / MASK_PLAN_SIDE)
    shape = (max(1, math.ceil(scene.height / f)), max(1, math.ceil(scene.width / f)))
    with scene.environment(), rasterio.open(scene.path) as ds:
        return DataMask(ds.dataset_mask(out_shape=shape, resampling=Resampling.average) > 0,
                        f)


def data_extent(scene: SceneInfo, mask: DataMask | None) -> tuple[int, int, int, int] | None:
    """The pixel window ``(x0, y0, x1, y1)`` that holds all the scene's valid pixels
    (None: there is none). Tiles planned over it sit flush with the edges of the data,
    as they do with the raster's: a black frame around a scene changes nothing.

    Found on the low-resolution mask, one cell wider on each side, then made exact
    from full-resolution strips along its four edges where those are small (cells of
    up to `EXACT_EDGE_CELLS` pixels); otherwise it errs on the wide side."""
    if mask is None:
        return (0, 0, scene.width, scene.height)
    rows, cols = np.flatnonzero(mask.cells.any(1)), np.flatnonzero(mask.cells.any(0))
    if not len(rows):
        return None
    f, w, h, m = mask.factor, scene.width, scene.height, 0 if mask.exact else 1
    x0, x1 = max(0, math.floor((cols[0] - m) * f)), min(w, math.ceil((cols[-1] + 1 + m) * f))
    y0, y1 = max(0, math.floor((rows[0] - m) * f)), min(h, math.ceil((rows[-1] + 1 + m) * f))
    if mask.exact or f > EXACT_EDGE_CELLS:
        return (x0, y0, x1, y1)
    band = math.ceil(3 * f)  # the one-cell margin and the cell on each side of the edge
    with scene.environment(), rasterio.open(scene.path) as ds:
        def valid(window: Window, axis: int) -> np.ndarray:
            return np.flatnonzero(ds.dataset_mask(window=window).any(axis))

        left = valid(Window(x0, y0, min(band, x1 - x0), y1 - y0), 0)
        right = valid(Window(max(x0, x1 - band), y0, min(band, x1 - x0), y1 - y0), 0)
        top = valid(Window(x0, y0, x1 - x0, min(band, y1 - y0)), 1)
        bottom = valid(Window(x0, max(y0, y1 - band), x1 - x0, min(band, y1 - y0)), 1)
    return (x0 + int(left[0]) if len(left) else x0,
            y0 + int(top[0]) if len(top) else y0,
            max(x0, x1 - band) + int(right[-1]) + 1 if len(right) else x1,
            max(y0, y1 - band) + int(bottom[-1]) + 1 if len(bottom) else y1)


def tiles_with_data(scene: SceneInfo, grid: Grid, mask: DataMask | None) -> np.ndarray:
    """Which tiles of ``grid`` hold at least one valid pixel (a bool per tile id),
    judged on the scene's low-resolution ``mask`` (`data_mask`).

    A tile counts as empty only when every cell it touches, and one cell around when
    reduced, is empty: small valid areas are not skipped. Vectorised over the grid's
    rows and columns with a summed-area table, so millions of tiles cost seconds.
    """
    if mask is None:
        return np.ones(len(grid), dtype=bool)
    shape = mask.cells.shape
    table = np.zeros((shape[0] + 1, shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = mask.cells.cumsum(0).cumsum(1)
    pad = 0 if mask.exact else 1  # at full resolution the mask is exact

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


@dataclass(frozen=True)
class Tile:
    """One tile at the model's input size, before scaling (`geodet.preprocess`)."""

    pixels: np.ndarray  # (bands, h, w) the scene's values and type, invalid ones filled
    valid: np.ndarray | None  # (h, w) bool, False on nodata and padding; None: all valid
    scale: tuple[float, float]  # output pixels per source pixel (sx, sy)

    @cached_property
    def _valid_table(self) -> np.ndarray:
        """The summed-area table of ``valid``, built once per tile (the box filter and
        the clipping to the data both ask)."""
        h, w = self.valid.shape
        table = np.zeros((h + 1, w + 1))
        table[1:, 1:] = self.valid.cumsum(0).cumsum(1)
        return table

    def valid_fraction(self, boxes: np.ndarray) -> np.ndarray:
        """The fraction of valid pixels under each ``(N, 4)`` box (tile pixels, x0 y0
        x1 y1, clipped to the tile), from a summed-area table."""
        if self.valid is None:
            return np.ones(len(boxes))
        h, w = self.valid.shape
        table = self._valid_table
        x0, x1 = (np.clip(np.round(boxes[:, i]), 0, w).astype(int) for i in (0, 2))
        y0, y1 = (np.clip(np.round(boxes[:, i]), 0, h).astype(int) for i in (1, 3))
        area = (x1 - x0) * (y1 - y0)
        count = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
        return np.where(area > 0, count / np.maximum(area, 1), 0.0)

    def clip_to_valid(self, boxes: np.ndarray, upright: np.ndarray) -> np.ndarray:
        """Each upright ``(N, 4)`` box (tile pixels) shrunk to the bounding box of the
        valid pixels under it, as boxes are clipped at the raster's edge: an object
        cut by the edge of the data is the part that has data, not the model's guess
        of what lies under nodata. Boxes over valid pixels only are unchanged."""
        if self.valid is None:
            return boxes
        out = boxes.copy()
        h, w = self.valid.shape
        for i in np.flatnonzero(upright & (self.valid_fraction(boxes) < 1)):
            x0, x1 = (int(np.clip(np.floor(boxes[i, 0]), 0, w)),
                      int(np.clip(np.ceil(boxes[i, 2]), 0, w)))
            y0, y1 = (int(np.clip(np.floor(boxes[i, 1]), 0, h)),
                      int(np.clip(np.ceil(boxes[i, 3]), 0, h)))
            under = self.valid[y0:y1, x0:x1]
            if not under.any():
                continue
            rows, cols = np.flatnonzero(under.any(1)), np.flatnonzero(under.any(0))
            out[i] = (max(boxes[i, 0], x0 + cols[0]), max(boxes[i, 1], y0 + rows[0]),
                      min(boxes[i, 2], x0 + cols[-1] + 1), min(boxes[i, 3], y0 + rows[-1] + 1))
        return out


#: Scenes a reader keeps open, the last used (tiles come scene by scene).
OPEN_SCENES = 8

#: A transform for in-memory rasters: any but the identity and its flip, of which
#: rasterio warns; GDAL's resampling does not depend on it.
NORTH_UP = Affine(1.0, 0.0, 0.0, 0.0, -1.0, 1.0)


def _from_memory(pixels: np.ndarray, valid: np.ndarray | None, window: Window,
                 size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray | None]:
    """``window`` of ``pixels`` (bands, h, w) resampled to ``size`` (w, h) by GDAL as it
    resamples a read of a raster that holds them (an in-memory dataset, with the
    ``valid`` mask, whose invalid pixels GDAL's kernel leaves out), and the validity
    at ``size`` as GDAL gives it (`rasterio.DatasetReader.dataset_mask`)."""
    bands, height, width = pixels.shape
    with rasterio.open("", "w+", driver="MEM", width=width, height=height, count=bands,
                       dtype=pixels.dtype, transform=NORTH_UP) as mem:
        mem.write(pixels)
        if valid is not None:
            mem.write_mask(valid)
        out = mem.read(window=window, out_shape=(bands, size[1], size[0]),
                       resampling=Resampling.bilinear)
        if valid is None:
            return out, None
        return out, mem.dataset_mask(window=window, out_shape=(size[1], size[0])) > 0


class TileReader:
    """Reads tiles with windowed reads, one open dataset per scene, for the last
    `OPEN_SCENES` used (a reader belongs to one thread: GDAL datasets are not shared
    between threads).

    With ``blocks`` (shared by the reader threads of one detector), a tile read at
    the scene's own resolution from a tiled raster is cut from the scene's decoded
    blocks, each decoded once for all the threads; its pixels and mask are those of
    a direct windowed read, bit for bit, but for the YCbCr blocks of local JPEG
    GeoTIFFs, which libjpeg-turbo decodes (`geodet.jpeg`). Tiles of such JPEG scenes
    at other resolutions are cut too, then resampled by GDAL as a direct read would
    resample them. Other tiles (resampled from other rasters, or from untiled or
    finely tiled ones) are read directly."""

    def __init__(self, scenes: list[SceneInfo], blocks: Blocks | None = None) -> None:
        self._scenes = scenes
        self._blocks = blocks
        self._open: OrderedDict[int, rasterio.DatasetReader] = OrderedDict()  # last used last
        self._block_shape: dict[int, tuple[int, int] | None] = {}  # (h, w) to cut from
        self._jpeg: dict[int, TurboJpeg | None] = {}  # decodes the blocks to cut from
        self._needs: set[int] = set()  # scenes whose rows of blocks `blocks` knows

    def _dataset(self, scene: int) -> rasterio.DatasetReader:
        """The scene's open dataset; the `OPEN_SCENES` last used stay open (a run over
        a collection must not hold a file per scene: a desktop allows 1024)."""
        if scene in self._open:
            self._open.move_to_end(scene)
        else:
            while len(self._open) >= OPEN_SCENES:
                self._forget(next(iter(self._open)))
            ds = self._open[scene] = rasterio.open(self._scenes[scene].path)
            shapes = {ds.block_shapes[b - 1] for b in self._scenes[scene].bands}
            shape = shapes.pop() if len(shapes) == 1 else None
            self._block_shape[scene] = shape if (
                self._blocks is not None and shape is not None
                and min(shape) >= MIN_BLOCK_SIDE) else None
            self._jpeg[scene] = TurboJpeg.open(ds) if self._block_shape[scene] else None
        return self._open[scene]

    def read(self, spec: TileSpec, out_size: tuple[int, int], tile: tuple[int, int]) -> Tile:
        """Read one tile: ``(bands, out_h, out_w)`` scene values.

        The nominal ``tile`` (w, h) in source pixels is resampled to ``out_size``
        (w, h); a window smaller than the tile (a raster smaller than one tile) is
        read at the same scale and padded on the right and bottom. Invalid pixels
        (nodata, alpha, mask) and the padding take the scene's fill and are marked
        invalid.
        """
        with self._scenes[spec.scene].environment():
            return self._read(spec, out_size, tile)

    def _read(self, spec: TileSpec, out_size: tuple[int, int], tile: tuple[int, int]) -> Tile:
        """`read`, inside the scene's GDAL environment."""
        info, ds = self._scenes[spec.scene], self._dataset(spec.scene)
        sx, sy = out_size[0] / tile[0], out_size[1] / tile[1]
        w = min(out_size[0], max(1, round(spec.width * sx)))
        h = min(out_size[1], max(1, round(spec.height * sy)))
        window = Window(spec.col_off, spec.row_off, spec.width, spec.height)
        if self._block_shape[spec.scene] and (w, h) == (spec.width, spec.height):
            data, valid = self._cut(spec.scene, ds, spec.col_off, spec.row_off,
                                    spec.col_off + spec.width, spec.row_off + spec.height)
        elif self._jpeg[spec.scene]:  # elsewhere GDAL's own decoding costs less
            data, valid = self._resampled(spec, ds, (w, h))
        else:
            resampling = Resampling.nearest if (w, h) == (spec.width, spec.height) \
                else Resampling.bilinear
            data = ds.read(list(info.bands), window=window,
                           out_shape=(len(info.bands), h, w), resampling=resampling)
            valid = ds.dataset_mask(window=window, out_shape=(h, w)) > 0 if info.has_mask \
                else None
        if (w, h) != out_size:
            pad = ((0, out_size[1] - h), (0, out_size[0] - w))
            data = np.pad(data, ((0, 0), *pad))
            valid = np.pad(np.ones((h, w), bool) if valid is None else valid, pad)
        if valid is not None:
            data[:, ~valid] = np.array(info.fill or 0, data.dtype).reshape(-1, 1)
        return Tile(data, valid, (w / spec.width, h / spec.height))

    def _resampled(self, spec: TileSpec, ds: rasterio.DatasetReader, size: tuple[int, int]
                   ) -> tuple[np.ndarray, np.ndarray | None]:
        """The tile's window resampled to ``size`` (w, h) by GDAL as a direct read
        resamples it, bit for bit, from its pixels cut from the decoded blocks with a
        margin for the resampling kernel (clamped to the raster, as GDAL clamps it).
        For JPEG blocks, which libjpeg-turbo decodes (1.7x faster on a JPEG mosaic at
        a third of its resolution); for others, the copies cost more than GDAL's own
        decoding saves (0.9x on a deflate scene at 0.77 of its resolution)."""
        margin = 2 + math.ceil(max(spec.width / size[0], spec.height / size[1], 1.0))
        x0, y0 = max(0, spec.col_off - margin), max(0, spec.row_off - margin)
        x1 = min(ds.width, spec.col_off + spec.width + margin)
        y1 = min(ds.height, spec.row_off + spec.height + margin)
        data, valid = self._cut(spec.scene, ds, x0, y0, x1, y1)
        window = Window(spec.col_off - x0, spec.row_off - y0, spec.width, spec.height)
        return _from_memory(data, valid, window, size)

    def _cut(self, scene: int, ds: rasterio.DatasetReader, x0: int, y0: int, x1: int,
             y1: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The window ``x0:x1, y0:y1`` at the scene's resolution, cut from its decoded
        blocks."""
        info, (bh, bw) = self._scenes[scene], self._block_shape[scene]
        if scene not in self._needs:  # the rows a row of tiles spans, and one more
            row = math.ceil(ds.width / bw) * bh * bw * (
                len(info.bands) * np.dtype(ds.dtypes[0]).itemsize + info.has_mask)
            self._blocks.need((math.ceil((y1 - y0) / bh) + 2) * row)
            self._needs.add(scene)

        def decode(key: tuple[int, int, int]) -> Block:  # on this thread's dataset
            _, r, c = key
            block = Window(c * bw, r * bh, min(bw, ds.width - c * bw),
                           min(bh, ds.height - r * bh))
            pixels = jpeg.decode(r, c, info.bands) if jpeg else None
            if pixels is None:
                pixels = ds.read(list(info.bands), window=block)
            return Block(pixels, ds.dataset_mask(window=block) > 0 if info.has_mask else None)

        jpeg = self._jpeg[scene]
        keys = [(scene, r, c) for r in range(y0 // bh, (y1 - 1) // bh + 1)
                for c in range(x0 // bw, (x1 - 1) // bw + 1)]
        blocks = self._blocks.get(keys, decode)
        dtype = next(iter(blocks.values())).pixels.dtype  # as a direct read gives it
        data = np.empty((len(info.bands), y1 - y0, x1 - x0), dtype)
        valid = np.empty((y1 - y0, x1 - x0), bool) if info.has_mask else None
        for (_, r, c), block in blocks.items():
            bx0, by0 = max(x0, c * bw), max(y0, r * bh)  # the overlap, scene pixels
            bx1, by1 = min(x1, (c + 1) * bw), min(y1, (r + 1) * bh)
            into = np.s_[by0 - y0:by1 - y0, bx0 - x0:bx1 - x0]
            part = np.s_[by0 - r * bh:by1 - r * bh, bx0 - c * bw:bx1 - c * bw]
            data[(slice(None), *into)] = block.pixels[(slice(None), *part)]
            if valid is not None:
                valid[into] = block.valid[part]
        return data, valid

    def try_read(self, spec: TileSpec, out_size: tuple[int, int],
                 tile: tuple[int, int]) -> tuple[Tile | None, str]:
        """`read`; returns ``(tile, "")``, or ``(None, reason)`` with GDAL's own words
        (file, band, block, bytes) when the tile cannot be read. The scene's dataset
        is then closed: a next attempt (`geodet.detector` tries remote scenes again)
        opens it afresh."""
        try:
            return self.read(spec, out_size, tile), ""
        except Exception as e:  # a corrupt block must not sink the other tiles
            self._forget(spec.scene)
            return None, gdal_reason(e)[:REASON_CHARS]

    def _forget(self, scene: int) -> None:
        """Close a scene's dataset; the next read opens it afresh."""
        ds, jpeg = self._open.pop(scene, None), self._jpeg.pop(scene, None)
        if jpeg is not None:
            jpeg.close()
        if ds is not None:
            ds.close()
