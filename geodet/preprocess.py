"""Preprocessing: scene pixel values -> the tensor the model takes."""

from __future__ import annotations

import numpy as np


def to_model_input(batch: np.ndarray, input_dtype: str, channels_last: bool = False,
                   mean: tuple[float, ...] | None = None,
                   std: tuple[float, ...] | None = None) -> np.ndarray:
    """Turn a ``(B, C, H, W)`` batch of scene values into what the model takes.

    Float models get values in 0..1: integer scenes are divided by their type's
    maximum (255 for uint8, 65535 for uint16), float scenes pass through; then
    ``(x - mean) / std`` per channel when the model declares them (Deepness
    metadata). Models that take uint8 get uint8 (clipped). NHWC models get NHWC.
    """
    if input_dtype == "uint8":
        x = np.clip(batch, 0, 255).astype(np.uint8)
    else:
        x = batch.astype(np.float32)
        if np.issubdtype(batch.dtype, np.integer):
            x *= np.float32(1.0 / np.iinfo(batch.dtype).max)
        if mean is not None:
            x -= np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        if std is not None:
            x /= np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        x = x.astype(input_dtype, copy=False)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x
