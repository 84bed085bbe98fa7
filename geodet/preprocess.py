"""Preprocessing: scene pixel values -> the tensor the model takes."""

from __future__ import annotations

import numpy as np


def to_model_input(batch: np.ndarray, input_dtype: str) -> np.ndarray:
    """Scale a ``(B, C, H, W)`` batch to what the model expects.

    Float models get values in 0..1: integer scenes are divided by their type's
    maximum (255 for uint8, 65535 for uint16), float scenes pass through. Models
    that take uint8 get uint8 (clipped).
    """
    if input_dtype == "uint8":
        return np.clip(batch, 0, 255).astype(np.uint8)
    x = batch.astype(np.float32)
    if np.issubdtype(batch.dtype, np.integer):
        x *= np.float32(1.0 / np.iinfo(batch.dtype).max)
    return x.astype(input_dtype, copy=False)
