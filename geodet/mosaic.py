"""Many files as one scene (``--mosaic``): a GDAL VRT document over adjacent rasters.

Surveys arrive as hundreds of adjacent GeoTIFFs; detected file by file, an object on
a file border is cut in two (or found twice). `build_vrt` checks that the files share
a CRS, a pixel grid, bands and data types, and returns a VRT document (XML text, which
GDAL opens as a dataset name): one raster over all of them, tiled and read like any
scene, so the tiles straddle file borders. The document names the files by absolute
path or GDAL URL and travels to the workers as the scene's path (no temporary file).
`plan_mosaic` also says where each file lies in the mosaic's pixels, which an
incremental run uses to re-run only the tiles over new or changed files.
"""

from __future__ import annotations

import math
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import rasterio
from rasterio.crs import CRS
from rasterio.dtypes import dtype_rev, typename_fwd
from rasterio.errors import RasterioIOError

from geodet import remote
from geodet.errors import InputError

#: How far (in pixels) a file's origin may sit off the mosaic's pixel grid.
GRID_TOLERANCE = 0.01


@dataclass(frozen=True)
class _Part:
    path: str  # absolute path or GDAL path
    width: int
    height: int
    crs: CRS
    transform: rasterio.Affine
    dtypes: tuple[str, ...]
    nodata: float | None
    colorinterp: tuple[str, ...]


def _open(path: str) -> _Part:
    path = remote.gdal_path(path)
    path = path if remote.is_remote(path) else os.path.abspath(path)
    try:
        with remote.environment(remote.gdal_config() if remote.is_remote(path) else {}), \
                rasterio.open(path) as ds:
            return _Part(path, ds.width, ds.height, ds.crs, ds.transform, ds.dtypes,
                         ds.nodata, tuple(c.name for c in ds.colorinterp))
    except RasterioIOError as e:
        raise InputError(f"cannot read mosaic file {path}: {str(e).splitlines()[0]}"
                         ) from None


def _check(first: _Part, part: _Part) -> None:
    """Raise `InputError` unless ``part`` can join ``first`` in one raster."""
    a, b = first, part
    problems = [
        (a.crs != b.crs, f"CRS {a.crs} vs {b.crs}"),
        (not math.isclose(a.transform.a, b.transform.a, rel_tol=1e-9)
         or not math.isclose(a.transform.e, b.transform.e, rel_tol=1e-9),
         f"resolution {a.transform.a:g} x {-a.transform.e:g} vs "
         f"{b.transform.a:g} x {-b.transform.e:g}"),
        (b.transform.b != 0 or b.transform.d != 0, "a rotated geotransform"),
        (len(a.dtypes) != len(b.dtypes), f"{len(a.dtypes)} vs {len(b.dtypes)} bands"),
        (a.dtypes != b.dtypes, f"data types {a.dtypes[0]} vs {b.dtypes[0]}"),
        (a.nodata != b.nodata, f"nodata {a.nodata} vs {b.nodata}"),
    ]
    for bad, what in problems:
        if bad:
            raise InputError(f"mosaic files disagree ({what}): {a.path} and {b.path}; "
                             "a mosaic needs one CRS, resolution, band count and data "
                             "type (reproject or resample with gdalwarp first)")


@dataclass(frozen=True)
class Mosaic:
    """The VRT document over some files, and each file's window in its pixels."""

    vrt: str
    windows: tuple[tuple[int, int, int, int], ...]  # x0, y0, x1, y1 per file, in order


def build_vrt(paths: list[str]) -> str:
    """A VRT document that mosaics ``paths`` (see the module doc)."""
    return plan_mosaic(paths).vrt


def plan_mosaic(paths: list[str]) -> Mosaic:
    """The `Mosaic` of ``paths``; `InputError` when they do not fit together."""
    parts = [_open(p) for p in paths]
    first = parts[0]
    if first.crs is None:
        raise InputError(f"mosaic file {first.path} has no coordinate reference system")
    for part in parts:
        _check(first, part)
    res_x, res_y = first.transform.a, first.transform.e  # e < 0 for north-up
    left = min(p.transform.c for p in parts)
    top = max(p.transform.f for p in parts) if res_y < 0 else min(p.transform.f
                                                                 for p in parts)
    offsets = []
    for p in parts:
        col, row = (p.transform.c - left) / res_x, (p.transform.f - top) / res_y
        if abs(col - round(col)) > GRID_TOLERANCE or abs(row - round(row)) > GRID_TOLERANCE:
            raise InputError(f"mosaic file {p.path} is not on the pixel grid of "
                             f"{first.path} (offset {col:.3f}, {row:.3f} px): align them "
                             "with gdalwarp -tap")
        offsets.append((round(col), round(row)))
    width = max(c + p.width for (c, _), p in zip(offsets, parts, strict=True))
    height = max(r + p.height for (_, r), p in zip(offsets, parts, strict=True))

    vrt = ET.Element("VRTDataset", rasterXSize=str(width), rasterYSize=str(height))
    ET.SubElement(vrt, "SRS").text = first.crs.to_wkt()
    ET.SubElement(vrt, "GeoTransform").text = ", ".join(
        repr(float(v)) for v in (left, res_x, 0.0, top, 0.0, res_y))
    for band, (dtype, interp) in enumerate(zip(first.dtypes, first.colorinterp,
                                               strict=True), start=1):
        vband = ET.SubElement(vrt, "VRTRasterBand", dataType=typename_fwd[dtype_rev[dtype]],
                              band=str(band))
        ET.SubElement(vband, "ColorInterp").text = interp.capitalize()
        if first.nodata is not None:
            ET.SubElement(vband, "NoDataValue").text = repr(first.nodata)
        for (col, row), p in zip(offsets, parts, strict=True):
            # A ComplexSource with NODATA does not paint a file's nodata over its
            # neighbour where files overlap.
            source = ET.SubElement(vband, "ComplexSource" if p.nodata is not None
                                   else "SimpleSource")
            ET.SubElement(source, "SourceFilename", relativeToVRT="0").text = p.path
            ET.SubElement(source, "SourceBand").text = str(band)
            ET.SubElement(source, "SrcRect", xOff="0", yOff="0", xSize=str(p.width),
                          ySize=str(p.height))
            ET.SubElement(source, "DstRect", xOff=str(col), yOff=str(row),
                          xSize=str(p.width), ySize=str(p.height))
            if p.nodata is not None:
                ET.SubElement(source, "NODATA").text = repr(p.nodata)
    return Mosaic(ET.tostring(vrt, encoding="unicode"),
                  tuple((c, r, c + p.width, r + p.height)
                        for (c, r), p in zip(offsets, parts, strict=True)))
