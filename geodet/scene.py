"""Scenes: opening and validating rasters, and what the pipeline needs to know of them.

Anything GDAL opens works (GeoTIFF, COG over HTTP or S3, VRT mosaics).
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass

import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError

from geodet.errors import InputError


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


def ground_resolution(crs: CRS, transform: Affine, height: int) -> tuple[float, float] | None:
    """Ground metres per pixel along x and y; for geographic CRSs, at the latitude of
    the scene's centre. None when the CRS's units are unknown."""
    px_x = math.hypot(transform.a, transform.d)
    px_y = math.hypot(transform.b, transform.e)
    if crs.is_geographic:
        lat = transform.f + transform.e * height / 2
        return (px_x * M_PER_DEG_LON * math.cos(math.radians(lat)), px_y * M_PER_DEG_LAT)
    try:
        unit = crs.linear_units_factor[1]
    except CRSError:  # a CRS without linear units
        return None
    return (px_x * unit, px_y * unit)
