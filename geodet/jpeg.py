"""JPEG blocks of local GeoTIFFs, decoded by libjpeg-turbo.

rasterio's wheels bundle IJG libjpeg 9, which decodes without SIMD: 1.9 ms for a
512 px YCbCr block on the benchmark machine, against 0.7 ms for libjpeg-turbo (through
`simplejpeg`), and decoding is most of what feeding a GPU from a drone orthomosaic
costs (benchmarks/gpu_feed.py). `TurboJpeg` takes a block's compressed bytes from
where GDAL says they are (the ``TIFF`` metadata domain: ``BLOCK_OFFSET_x_y``,
``BLOCK_SIZE_x_y``, ``JPEGTABLES``) and decodes them itself.

The two decoders give the same pixels except at sharp colour edges, where libjpeg 9
upsamples the half-resolution colour by DCT scaling and libjpeg-turbo (the JPEG
library of most GDAL builds: Debian's, conda-forge's) by a triangle filter; on an
aerial scene at quality 90, 99 % of values are within 8 levels. Blocks it cannot
decode (sparse, corrupt, or not the size of a block) are left to GDAL, which
reads them, or reports them, as it always does.
"""

from __future__ import annotations

import os

import numpy as np
import rasterio
import simplejpeg
from rasterio.enums import Compression


class TurboJpeg:
    """Decodes the blocks of one open dataset (a reader's, on one thread) whose
    every band is in 8-bit YCbCr JPEG blocks; `open` says whether it can."""

    def __init__(self, ds: rasterio.DatasetReader, tables: bytes | None) -> None:
        self._ds, self._tables = ds, tables
        self._file = open(ds.name, "rb", buffering=0)  # noqa: SIM115 (closed in `close`)

    @classmethod
    def open(cls, ds: rasterio.DatasetReader) -> TurboJpeg | None:
        """A decoder for ``ds``, or None where GDAL must decode: a remote or non-TIFF
        raster, another compression or colour space, or bands other than three bytes
        in one block."""
        structure = ds.tags(ns="IMAGE_STRUCTURE")
        if not (ds.driver == "GTiff" and os.path.isfile(ds.name) and ds.count == 3
                and ds.compression == Compression.jpeg
                and structure.get("SOURCE_COLOR_SPACE") == "YCbCr"
                and structure.get("INTERLEAVE") == "PIXEL"
                and set(ds.dtypes) == {"uint8"} and len(set(ds.block_shapes)) == 1):
            return None
        tables = ds.get_tag_item("JPEGTABLES", "TIFF", bidx=1)
        return cls(ds, bytes.fromhex(tables) if tables else None)

    def _stream(self, row: int, col: int) -> bytes | None:
        """The block's JPEG stream with the file's tables spliced in, or None for a
        block that is not in the file (sparse)."""
        item = self._ds.get_tag_item
        offset = item(f"BLOCK_OFFSET_{col}_{row}", "TIFF", bidx=1)
        size = item(f"BLOCK_SIZE_{col}_{row}", "TIFF", bidx=1)
        if not offset or not size or not int(size):
            return None
        self._file.seek(int(offset))
        data = self._file.read(int(size))
        if self._tables is None:
            return data
        return self._tables[:-2] + data[2:]  # tables' SOI..DQT/DHT, then the block's

    def decode(self, row: int, col: int, bands: tuple[int, ...]) -> np.ndarray | None:
        """Block ``(row, col)``'s ``bands`` (1-based), ``(bands, h, w)`` cropped to
        the raster, or None where GDAL must decode it."""
        stream = self._stream(row, col)
        if stream is None:
            return None
        try:
            rgb = simplejpeg.decode_jpeg(stream, colorspace="RGB")
        except ValueError:  # corrupt: GDAL reads it, or says what is wrong
            return None
        bh, bw = self._ds.block_shapes[0]
        if rgb.shape != (bh, bw, 3):  # not the block the file says it is
            return None
        h, w = min(bh, self._ds.height - row * bh), min(bw, self._ds.width - col * bw)
        return np.ascontiguousarray(rgb.transpose(2, 0, 1)[[b - 1 for b in bands], :h, :w])

    def close(self) -> None:
        self._file.close()
