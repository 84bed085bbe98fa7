"""Decoders: raw model outputs -> boxes in model-input pixels, one per output layout.

A decoder takes the list of output arrays of one batch and the confidence threshold
and returns, for each image, ``(boxes xyxy, scores, class_ids)``. New layouts are
added to `DECODERS` and to `detect_layout`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from geodet.errors import InputError
from geodet.model import ModelInfo

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray]
Decoder = Callable[[list[np.ndarray], float], list[Decoded]]


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def decode_ultralytics(outputs: list[np.ndarray], conf: float) -> list[Decoded]:
    """Ultralytics YOLOv5u/v8/YOLO11 ``[B, 4 + nc, N]``: cx, cy, w, h, class scores."""
    out = outputs[0]
    result = []
    for pred in out:  # (4 + nc, N)
        cls_scores = pred[4:]
        class_ids = cls_scores.argmax(axis=0)
        scores = cls_scores[class_ids, np.arange(pred.shape[1])]
        keep = scores >= conf
        boxes = cxcywh_to_xyxy(pred[:4, keep].T.astype(np.float64))
        result.append((boxes, scores[keep].astype(np.float32), class_ids[keep]))
    return result


DECODERS: dict[str, Decoder] = {"ultralytics": decode_ultralytics}


def detect_layout(model: ModelInfo) -> str:
    """The output layout of a model, from its output shapes and class names."""
    shapes = model.output_shapes
    if len(shapes) == 1 and len(shapes[0]) == 3:
        _, channels, anchors = shapes[0]
        n_classes = len(model.names)
        if channels is not None and (
            (n_classes and channels == 4 + n_classes)
            or (not n_classes and channels > 4 and (anchors is None or channels < anchors))
        ):
            return "ultralytics"
    raise InputError(
        f"model {model.path} has outputs {[list(s) for s in shapes]}, a layout geodet "
        f"does not recognise; supported layouts: {', '.join(DECODERS)} "
        "(pick one with --layout)"
    )
