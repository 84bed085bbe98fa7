"""JPEG blocks of local GeoTIFFs, decoded by libjpeg-turbo.

rasterio's wheels bundle IJG libjpeg 9, which decodes without SIMD: 1.9 ms for a
512 px YCbCr block on the benchmark machine, against 0.7 ms for libjpeg-turbo (through
`simplejpeg`), and decoding is most of what feeding a GPU from a drone orthomosaic
costs (benchmarks/gpu_feed.py). `TurboJpeg` takes a block's compressed bytes from
where GDAL says they are (the ``TIFF`` metadata domain: ``BLOCK_OFFSET_x_y``,
``BLOCK_SIZE_x_y``, ``JPEGTABLES``) and decodes them itself.

The two decoders give the same pixels, bit for bit, for blocks of one band; for
YCbCr blocks, except at sharp colour edges, where libjpeg 9 upsamples the
half-resolution colour by DCT scaling and libjpeg-turbo (the JPEG library of most
GDAL builds: Debian's, conda-forge's) by a triangle filter; on an aerial scene at
quality 90, 99 % of values are within 8 levels (tests/test_jpeg.py). Blocks it
cannot decode (sparse, corrupt, or not what the file says) are left to GDAL, which
reads them, or reports them, as it always does.
"""

from __future__ import annotations

import os

import numpy as np
import rasterio
import simplejpeg
from rasterio.enums import Compression, MaskFlags


class TurboJpeg:
    """Decodes the JPEG blocks of one open dataset (a reader's, on one thread): 8-bit
    YCbCr blocks holding three bands (drone orthomosaics), or 8-bit blocks of one band
    each (``INTERLEAVE=BAND``: panchromatic or multispectral data), which libjpeg 9
    and libjpeg-turbo decode alike, bit for bit. `open` says whether it can."""

    def __init__(self, ds: rasterio.DatasetReader, tables: bytes | None,
                 per_band: bool) -> None:
        self._ds, self._tables, self._per_band = ds, tables, per_band
        self._file = open(ds.name, "rb", buffering=0)  # noqa: SIM115 (closed in `close`)

    @classmethod
    def open(cls, ds: rasterio.DatasetReader) -> TurboJpeg | None:
        """A decoder for ``ds``, or None where GDAL must decode: a remote or non-TIFF
        raster, another compression, data type or colour space (RGB JPEG), bands in
        blocks of different shapes, or validity that GDAL works out from the pixels
        (a nodata value, an alpha band): it would decode every block again for it."""
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        if not (ds.driver == "GTiff" and os.path.isfile(ds.name)
                and ds.compression == Compression.jpeg and set(ds.dtypes) == {"uint8"}
                and len(set(ds.block_shapes)) == 1
                and all(MaskFlags.nodata not in f and MaskFlags.alpha not in f
                        for f in ds.mask_flag_enums)):
            return None
        per_band = structure.get("INTERLEAVE") == "BAND"
        if not per_band and not (ds.count == 3 and structure.get("INTERLEAVE") == "PIXEL"
                                 and structure.get("SOURCE_COLOR_SPACE") == "YCbCr"):
            return None
        tables = ds.get_tag_item("JPEGTABLES", "TIFF", bidx=1)
        return cls(ds, bytes.fromhex(tables) if tables else None, per_band)

    def _plane(self, row: int, col: int, band: int) -> np.ndarray | None:
        """Block ``(row, col)`` of ``band`` (all three bands for YCbCr) decoded,
        ``(bh, bw, 1 or 3)``, or None where GDAL must decode it: a block that is not
        in the file (sparse), is corrupt, or is not what the file says."""
        item = self._ds.get_tag_item
        offset = item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=band)
        size = item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=band)
        if not offset or not size or not int(size):
            return None
        self._file.seek(int(offset))
        stream = self._file.read(int(size))
        if self._tables is not None:  # the tables' SOI..DQT/DHT, then the block's
            stream = self._tables[:-2] + stream[2:]
        space, channels = ("Gray", 1) if self._per_band else ("YCbCr", 3)
        try:
            if simplejpeg.decode_jpeg_header(stream)[2] != space:
                return None
            pixels = simplejpeg.decode_jpeg(
                stream, colorspace="GRAY" if self._per_band else "RGB")
        except ValueError:  # corrupt: GDAL reads it, or says what is wrong
            return None
        return pixels if pixels.shape == (*self._ds.block_shapes[0], channels) else None

    def decode(self, row: int, col: int, bands: tuple[int, ...]) -> np.ndarray | None:
        """Block ``(row, col)``'s ``bands`` (1-based), ``(bands, h, w)`` cropped to
        the raster, or None where GDAL must decode it."""
        bh, bw = self._ds.block_shapes[0]
        h, w = min(bh, self._ds.height - row * bh), min(bw, self._ds.width - col * bw)
        if self._per_band:
            planes = [self._plane(row, col, b) for b in bands]
            if any(p is None for p in planes):
                return None
            return np.stack([p[:h, :w, 0] for p in planes])
        rgb = self._plane(row, col, 1)
        if rgb is None:
            return None
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[[b - 1 for b in bands], :h, :w])

    def close(self) -> None:
        self._file.close()
