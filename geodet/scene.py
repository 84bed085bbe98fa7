"""Scenes: opening and validating rasters, and what the pipeline needs to know of them.

Anything GDAL opens works (GeoTIFF, COG over HTTP or S3, VRT mosaics). Besides the
grid and bands, a scene carries how its values become the model's 0..1 (decided once
for the whole scene, never per tile) and what its invalid pixels are fed as.

Value scaling, first rule that applies: ``--scale`` (one MIN,MAX for all bands, or a
pair per band); float data as it is; 8-bit data 0..255; the bit depth the scene
declares (GeoTIFF ``NBITS``, e.g. 12 -> 0..4095); else the smallest bit depth that
holds the scene's largest value on a low-resolution read, with a warning.

Invalid pixels (nodata value, alpha band, internal mask) are fed as the scene's mean
valid value per band: a flat field with no edge for the model to fire on (black,
the usual nodata, makes a hard edge along every border of the data).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import ColorInterp, MaskFlags
from rasterio.errors import CRSError, NotGeoreferencedWarning, RasterioIOError

from geodet import remote
from geodet.errors import InputError

log = logging.getLogger(__name__)

#: The longest side of the low-resolution read that gives a scene's statistics.
STATS_SIDE = 1024


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
    #: Per band, the values mapped to 0 and 1; None: float values fed as they are.
    value_range: tuple[tuple[float, float], ...] | None = None
    range_source: str = ""  # which rule gave value_range
    fill: tuple[float, ...] | None = None  # per band: what invalid pixels are fed as
    #: GDAL configuration for a remote scene (`geodet.remote`), credentials included.
    gdal_config: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    @property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @property
    def name(self) -> str:
        if self.path.startswith("<VRTDataset"):
            return "mosaic"
        return os.path.basename(self.path.rstrip("/")) or self.path

    def environment(self) -> AbstractContextManager:
        """Where to open and read the scene: GDAL configured for it (remote scenes)."""
        return remote.environment(dict(self.gdal_config))


def open_scene(path: str | os.PathLike, bands: tuple[int, ...] | None = None,
               scale: tuple[float, ...] | None = None) -> SceneInfo:
    """Open and validate a scene, raising `InputError` with a one-line reason.

    ``path``: a file, a URL (``s3://``, ``gs://``, ``https://``), a GDAL path, or a
    VRT document. ``scale``: the ``--scale`` option (see the module doc).
    """
    given = os.fspath(path)
    path = remote.gdal_path(given)
    local = not remote.is_remote(path) and not path.startswith("<VRTDataset")
    if local and not os.path.exists(path):
        raise InputError(f"scene not found: {path}: check the path")
    if local and os.path.isdir(path):
        raise InputError(f"scene is a directory, not a raster: {path}")
    config = tuple(remote.gdal_config().items()) if remote.is_remote(path) else ()
    with remote.environment(dict(config)):
        return _open(path, given, local, bands, scale, config)


def _open(path: str, given: str, local: bool, bands: tuple[int, ...] | None,
          scale: tuple[float, ...] | None, config: tuple[tuple[str, str], ...]) -> SceneInfo:
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
        if not local:
            raise InputError(f"cannot read remote scene {given}: {_remote_reason(e)}: "
                             "check the URL and, for object storage, the credentials and "
                             "the endpoint (AWS_ENDPOINT_URL...)") from None
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
        dtype = ds.dtypes[chosen[0] - 1] if chosen else ds.dtypes[0]
        sample = _sample(ds, chosen) if chosen and (
            has_mask or _needs_largest_value(ds, chosen, dtype, scale)) else None
        value_range, source = _value_range(ds, chosen, dtype, scale, sample)
        fill = None
        if has_mask and sample is not None:
            fill = tuple(float(m) if m is not np.ma.masked else 0.0
                         for m in sample.mean(axis=(1, 2)))
        return SceneInfo(
            path=path, width=ds.width, height=ds.height, bands=chosen, dtype=dtype,
            crs_wkt=ds.crs.to_wkt(), transform=tuple(ds.transform)[:6], has_mask=has_mask,
            gsd=ground_resolution(ds.crs, ds.transform, ds.height),
            value_range=value_range, range_source=source, fill=fill, gdal_config=config,
        )


def _remote_reason(error: RasterioIOError) -> str:
    """The first line of what GDAL said, HTTP status included when it gave one."""
    messages = []
    e: BaseException | None = error
    while e is not None:
        messages.append(str(e).splitlines()[0] if str(e) else "")
        e = e.__cause__ or e.__context__
    http = [m for m in messages if "HTTP" in m or "time" in m.lower()]
    return (http or messages or ["unreadable"])[0] or "unreadable"


def _sample(ds: rasterio.DatasetReader, bands: tuple[int, ...]) -> np.ma.MaskedArray:
    """The bands at low resolution (overviews where the file has them), invalid
    pixels masked: the scene-wide statistics come from it."""
    f = max(1.0, max(ds.width, ds.height) / STATS_SIDE)
    shape = (len(bands), max(1, round(ds.height / f)), max(1, round(ds.width / f)))
    return ds.read(list(bands), out_shape=shape, masked=True)


def _needs_largest_value(ds, bands, dtype: str, scale) -> bool:
    return scale is None and np.dtype(dtype).kind in "iu" and np.dtype(dtype).itemsize > 1 \
        and _declared_bits(ds, bands) is None


def _declared_bits(ds: rasterio.DatasetReader, bands: tuple[int, ...]) -> int | None:
    """The bit depth the file declares for the bands (GeoTIFF ``NBITS``), if any."""
    bits = [ds.tags(b, ns="IMAGE_STRUCTURE").get("NBITS") for b in bands]
    return max(int(b) for b in bits) if all(bits) else None


def _value_range(ds, bands: tuple[int, ...], dtype: str, scale: tuple[float, ...] | None,
                 sample: np.ma.MaskedArray | None
                 ) -> tuple[tuple[tuple[float, float], ...] | None, str]:
    """Per band, the values that map to 0 and 1, and the rule that gave them."""
    kind = np.dtype(dtype)
    if scale is not None:
        pairs = list(zip(scale[::2], scale[1::2], strict=True))
        if len(pairs) == 1:
            pairs *= len(bands)
        if len(pairs) != len(bands):
            raise InputError(f"--scale gives {len(pairs)} MIN,MAX pairs for the "
                             f"{len(bands)} bands of {ds.name}: give one pair for all bands "
                             "or one per band")
        return tuple(pairs), "command line (--scale)"
    if kind.kind == "f":
        return None, "float data: as is"
    if kind.itemsize == 1:
        return ((0.0, float(np.iinfo(kind).max)),) * len(bands), f"{dtype}: full range"
    bits = _declared_bits(ds, bands)
    if bits is not None:
        return ((0.0, float(2 ** bits - 1)),) * len(bands), f"NBITS={bits} in the scene"
    largest = int(sample.max()) if sample is not None and sample.count() else 255
    bits = max(8, largest.bit_length())
    log.warning("scene %s is %s without a declared bit depth (NBITS): its values are "
                "scaled from 0..%d (%d bits, the smallest that holds its largest value %d "
                "on a low-resolution read); give --scale MIN,MAX to choose", os.path.basename(
                    ds.name), dtype, 2 ** bits - 1, bits, largest)
    return ((0.0, float(2 ** bits - 1)),) * len(bands), (
        f"largest value {largest} on a low-resolution read: {bits} bits")


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
