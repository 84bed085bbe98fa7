"""Scenes: opening and validating rasters, planning which tiles hold data, reading tiles.

Anything GDAL opens works (GeoTIFF, COG over HTTP or S3, VRT mosaics). Pixels are
only ever read through windows; a whole scene is never loaded.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.windows import Window

from geodet.errors import InputError
from geodet.tiling import TileSpec

#: The longest side of the low-resolution mask used to find tiles without data.
MASK_PLAN_SIDE = 2048


@dataclass(frozen=True)
class SceneInfo:
    """What the pipeline needs to know of a scene; small and picklable."""

    path: str
    width: int
    height: int
    bands: tuple[int, ...]  # 1-based band indexes fed to the model, in order
    dtype: str
    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]  # Affine a, b, c, d, e, f
    has_mask: bool  # nodata, alpha or an internal mask: some pixels may be invalid
    gsd: tuple[float, float] | None = None  # ground metres per pixel (x, y), if known

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def name(self) -> str:
        return os.path.basename(self.path.rstrip("/")) or self.path


def _is_local(path: str) -> bool:
    return "://" not in path and not path.startswith("/vsi")


def open_scene(path: str | os.PathLike, bands: tuple[int, ...] | None = None) -> SceneInfo:
    """Open and validate a scene, raising `InputError` with a one-line reason."""
    path = os.fspath(path)
    if _is_local(path) and not os.path.exists(path):
        raise InputError(f"scene not found: {path}: check the path")
    if _is_local(path) and os.path.isdir(path):
        raise InputError(f"scene is a directory, not a raster: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", NotGeoreferencedWarning)
            ds = rasterio.open(path)
    except NotGeoreferencedWarning:
        raise InputError(
            f"scene has no georeferencing: {path}: give a georeferenced raster "
            "(for example assign a CRS and bounds with gdal_translate -a_srs -a_ullr)"
        ) from None
    except RasterioIOError as e:
        reason = str(e).splitlines()[0] if str(e) else "unreadable"
        raise InputError(
            f"cannot read scene as a raster: {path} ({reason}): give a GeoTIFF or "
            "another raster that GDAL can open"
        ) from None
    with ds:
        if ds.crs is None:
            raise InputError(
                f"scene has no coordinate reference system: {path}: assign one, for "
                "example with gdal_edit.py -a_srs EPSG:32633"
            )
        if ds.transform.is_degenerate:
            raise InputError(f"scene has a degenerate geotransform: {path}")
        data_bands = tuple(
            i for i, ci in zip(ds.indexes, ds.colorinterp, strict=True)
            if ci != ColorInterp.alpha
        )
        if bands is None:
            chosen = data_bands
        else:
            bad = [b for b in bands if not 1 <= b <= ds.count]
            if bad:
                raise InputError(
                    f"scene {path} has bands 1..{ds.count}, but bands {bad} were asked for"
                )
            chosen = tuple(bands)
        has_mask = any(MaskFlags.all_valid not in flags for flags in ds.mask_flag_enums)
        return SceneInfo(
            path=path, width=ds.width, height=ds.height, bands=chosen,
            dtype=ds.dtypes[chosen[0] - 1] if chosen else ds.dtypes[0],
            crs_wkt=ds.crs.to_wkt(), transform=tuple(ds.transform)[:6], has_mask=has_mask,
            gsd=ground_resolution(ds.crs, ds.transform, ds.height),
        )


#: Metres per degree of latitude, and of longitude at the equator (WGS 84, mean).
M_PER_DEG_LAT, M_PER_DEG_LON = 110_574.0, 111_320.0


def ground_resolution(crs, transform: Affine, height: int) -> tuple[float, float] | None:
    """Ground metres per pixel along x and y; for geographic CRSs, at the latitude of
    the scene's centre. None when the CRS's units are unknown."""
    px_x = math.hypot(transform.a, transform.d)
    px_y = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        lat = transform.f + transform.e * height / 2
        return (px_x * M_PER_DEG_LON * math.cos(math.radians(lat)), px_y * M_PER_DEG_LAT)
    try:
        unit = crs.linear_units_factor[1]
    except Exception:  # a CRS without linear units
        return None
    return (px_x * unit, px_y * unit)


def tiles_with_data(scene: SceneInfo, specs: list[TileSpec]) -> list[bool]:
    """Which tiles hold at least one valid pixel, judged on a low-resolution mask.

    The mask is averaged down (any valid pixel keeps its cell non-zero, up to cells
    of a few hundred pixels a side), and a tile counts as empty only when every cell
    it touches, and one cell around when reduced, is empty: small valid areas are not skipped.
    """
    if not scene.has_mask:
        return [True] * len(specs)
    f = max(1.0, max(scene.width, scene.height) / MASK_PLAN_SIDE)
    shape = (max(1, math.ceil(scene.height / f)), max(1, math.ceil(scene.width / f)))
    with rasterio.open(scene.path) as ds:
        mask = ds.dataset_mask(out_shape=shape, resampling=Resampling.average) > 0
    sy, sx = shape[0] / scene.height, shape[1] / scene.width
    pad = 1 if f > 1 else 0  # at full resolution the mask is exact
    result = []
    for s in specs:
        r0, c0 = max(0, int(s.row_off * sy) - pad), max(0, int(s.col_off * sx) - pad)
        r1 = min(shape[0], math.ceil((s.row_off + s.height) * sy) + pad)
        c1 = min(shape[1], math.ceil((s.col_off + s.width) * sx) + pad)
        result.append(bool(mask[r0:r1, c0:c1].any()))
    return result


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

    def forget(self, scene: int) -> None:
        """Close a scene's dataset; the next read opens it afresh."""
        ds = self._open.pop(scene, None)
        if ds is not None:
            ds.close()

    def close(self) -> None:
        for ds in self._open.values():
            ds.close()
        self._open.clear()
