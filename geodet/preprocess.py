"""Preprocessing: tiles of scene values (`geodet.read`) -> the tensor the model takes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: A scene's value range: one (min, max) per band, mapped to 0..1; None: as it is.
ValueRange = tuple[tuple[float, float], ...] | None


def unit_range(data: np.ndarray, value_range: ValueRange,
               out: np.ndarray | None = None) -> np.ndarray:
    """Scene values -> float32, mapped to 0..1 by the scene's value range (clipped);
    float scenes without a range as they are. Written into ``out`` if given.

    Where the range starts at 0 (8-bit data as 0..255) the conversion to float32 and
    the product are one ufunc call, with the same float32 results as converting
    first; the factor is a float32 product, the same float32 as ``x / 255``."""
    if value_range is None:
        if out is None:
            return data.astype(np.float32)
        out[...] = data
        return out
    lo, hi = (np.array(v, np.float64).reshape(-1, 1, 1)
              for v in zip(*value_range, strict=True))
    scale = (1.0 / (hi - lo)).astype(np.float32)
    x = _scaled(data, lo, scale, out)
    if _may_leave_unit(data.dtype, lo, scale):
        np.clip(x, 0, 1, out=x)
    return x


def _scaled(data: np.ndarray, lo: np.ndarray, scale: np.ndarray,
            out: np.ndarray | None = None) -> np.ndarray:
    if lo.any():
        x = np.subtract(data, lo.astype(np.float32), out=out, dtype=np.float32)
        x *= scale
        return x
    return np.multiply(data, scale, out=out, dtype=np.float32)


def _may_leave_unit(dtype: np.dtype, lo: np.ndarray, scale: np.ndarray) -> bool:
    """Whether values of ``dtype`` can map outside 0..1: not when the range covers
    the whole integer type (8-bit data as 0..255), judged on the type's two ends
    through the same arithmetic, so that skipping the clip changes no bit."""
    if not np.issubdtype(dtype, np.integer):
        return True
    info = np.iinfo(dtype)
    ends = _scaled(np.array([info.min, info.max], dtype).reshape(1, 1, 2), lo, scale)
    return bool((ends < 0).any() or (ends > 1).any())


def to_model_input(tiles: Sequence[np.ndarray], ranges: Sequence[ValueRange],
                   input_dtype: str, channels_last: bool = False,
                   mean: tuple[float, ...] | None = None,
                   std: tuple[float, ...] | None = None, batch: int | None = None,
                   buffer: np.ndarray | None = None) -> np.ndarray:
    """Turn ``(C, H, W)`` tiles of scene values, each with its scene's value range,
    into the ``(B, C, H, W)`` batch the model takes.

    Values go to 0..1 scene-wide by the range (`unit_range`), then ``(x - mean) /
    std`` per channel when the model declares them (Deepness metadata). Models that
    take uint8 get 0..255 (8-bit scenes: their values as they are). NHWC models get
    NHWC. ``batch``: a model's fixed batch, padded with zeros. ``buffer``: a float32
    (uint8, for what goes to the model as uint8) array of at least that shape, reused
    from call to call (a batch of fresh arrays costs more in page faults than the
    arithmetic does).
    """
    n, shape = len(tiles), tiles[0].shape
    rows = max(n, batch or 0)

    def reused(dtype: type) -> np.ndarray:
        fits = (buffer is not None and buffer.dtype == dtype and len(buffer) >= rows
                and buffer.shape[1:] == shape)
        return buffer[:rows] if fits else np.empty((rows, *shape), dtype)

    if input_dtype == "uint8" and all(t.dtype == np.uint8 and _is_8bit(r)
                                      for t, r in zip(tiles, ranges, strict=True)):
        x = reused(np.uint8)
        for i, tile in enumerate(tiles):  # not x[:n] = tiles: that stacks them first
            x[i] = tile
        x[n:] = 0
    else:
        x = reused(np.float32)
        for i, (tile, value_range) in enumerate(zip(tiles, ranges, strict=True)):
            unit_range(tile, value_range, out=x[i])
        x[n:] = 0
        if input_dtype == "uint8":
            x = np.clip(np.rint(x * 255), 0, 255).astype(np.uint8)
        else:
            if mean is not None:
                x[:n] -= np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
            if std is not None:
                x[:n] /= np.asarray(std, np.float32).reshape(1, -1, 1, 1)
            x = x.astype(input_dtype, copy=False)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x


def _is_8bit(value_range: ValueRange) -> bool:
    return value_range is not None and all(r == (0, 255) for r in value_range)

