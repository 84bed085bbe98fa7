"""Preprocessing: tiles in 0..1 (`geodet.read`) -> the tensor the model takes."""

from __future__ import annotations

import numpy as np


def to_model_input(batch: np.ndarray, input_dtype: str, channels_last: bool = False,
                   mean: tuple[float, ...] | None = None,
                   std: tuple[float, ...] | None = None) -> np.ndarray:
    """Turn a ``(B, C, H, W)`` float32 batch in 0..1 into what the model takes.

    Values were scaled scene-wide by the reader (float scenes are as they are); here
    ``(x - mean) / std`` per channel when the model declares them (Deepness
    metadata). Models that take uint8 get 0..255 (clipped). NHWC models get NHWC.
    """
    if input_dtype == "uint8":
        x = np.clip(np.rint(batch * 255), 0, 255).astype(np.uint8)
    else:
        x = batch.astype(np.float32)  # a copy: the batch is not changed in place
        if mean is not None:
            x -= np.asarray(mean, np.float32).reshape(1, -1, 1, 1)
        if std is not None:
            x /= np.asarray(std, np.float32).reshape(1, -1, 1, 1)
        x = x.astype(input_dtype, copy=False)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if channels_last else x
