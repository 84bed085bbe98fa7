"""Decoders: raw model outputs -> boxes in model-input pixels, one per output layout.

A decoder takes the output arrays of one batch, the confidence threshold and the
model input size ``(w, h)``, and returns, for each image, ``(boxes xyxy, scores,
class_ids, angles)``; oriented boxes are the xyxy box turned by ``angles`` (radians)
about its centre, and angles are 0 for every other layout. New layouts are added to
`DECODERS` and to `detect_layout`.

On a GPU, the dense YOLO layouts are decoded in part on the device
(`reduced_on_device`): the host then copies and scans 6 values a candidate, not 4 + nc.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np

from geodet.errors import InputError
from geodet.model import ModelInfo

Decoded = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
Decoder = Callable[[list[np.ndarray], float, tuple[int, int]], list[Decoded]]

#: Above this many candidates per image, a [B, N, k] output is a dense YOLO grid
#: rather than the fixed query set of a DETR or an end-to-end export.
MAX_QUERIES = 1000


def cxcywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    half = b[:, 2:4] / 2
    return np.concatenate([b[:, :2] - half, b[:, :2] + half], axis=1)


def _best_class(cls_scores: np.ndarray, conf: float, weight: np.ndarray | None = None):
    """The candidates whose best class scores at least ``conf``, from ``(N, nc)``
    scores: their indexes, best class and score. The best score is a max over the
    classes, which numpy vectorises along the model's own layout; the argmax, which
    it does not, runs on the few candidates kept (a YOLO grid has thousands a tile)."""
    scores = cls_scores.max(axis=1)
    if weight is not None:
        scores = scores * weight
    keep = np.flatnonzero(scores >= conf)
    return keep, cls_scores[keep].argmax(axis=1), scores[keep]


def _select(boxes, scores, ids, conf, angles=None) -> Decoded:
    keep = scores >= conf
    angles = np.zeros(len(scores)) if angles is None else angles
    return (boxes[keep].astype(np.float64), scores[keep].astype(np.float32),
            ids[keep].astype(np.int64), angles[keep].astype(np.float64))


def decode_ultralytics(outputs, conf, size) -> list[Decoded]:
    """Ultralytics YOLOv5u/v8/YOLO11 ``[B, 4 + nc, N]``: cx, cy, w, h, class scores."""
    result = []
    for pred in outputs[0]:
        p = pred.T  # (N, 4 + nc)
        keep, ids, scores = _best_class(p[:, 4:], conf)
        result.append(_select(cxcywh_to_xyxy(p[keep, :4]), scores, ids, conf))
    return result


def decode_obb(outputs, conf, size) -> list[Decoded]:
    """Ultralytics OBB ``[B, 4 + nc + 1, N]``: cx, cy, w, h, class scores, angle
    (radians)."""
    result = []
    for pred in outputs[0]:
        p = pred.T
        keep, ids, scores = _best_class(p[:, 4:-1], conf)
        result.append(_select(cxcywh_to_xyxy(p[keep, :4]), scores, ids, conf, p[keep, -1]))
    return result


def decode_yolov5(outputs, conf, size) -> list[Decoded]:
    """Original YOLOv5/v7 ``[B, N, 5 + nc]``: cx, cy, w, h, objectness, class
    probabilities; score = objectness x class probability."""
    result = []
    for p in outputs[0]:
        keep, ids, scores = _best_class(p[:, 5:], conf, weight=p[:, 4])
        result.append(_select(cxcywh_to_xyxy(p[keep, :4]), scores, ids, conf))
    return result


def decode_end2end(outputs, conf, size) -> list[Decoded]:
    """End-to-end exports with NMS inside ``[B, N, 6]``: x1, y1, x2, y2, score, class."""
    return [_select(p[:, :4], p[:, 4], p[:, 5].round(), conf) for p in outputs[0]]


def decode_detr(outputs, conf, size) -> list[Decoded]:
    """RT-DETR / DETR style ``[B, N, 4 + nc]``: cx, cy, w, h normalised to 0..1,
    class scores."""
    scale = np.array([size[0], size[1], size[0], size[1]], dtype=np.float64)
    result = []
    for p in outputs[0]:
        keep, ids, scores = _best_class(p[:, 4:], conf)
        result.append(_select(cxcywh_to_xyxy(p[keep, :4]) * scale, scores, ids, conf))
    return result


def decode_boxes_scores_labels(outputs, conf, size) -> list[Decoded]:
    """Three outputs (torchvision-style): boxes ``[B, N, 4]`` x1 y1 x2 y2 in pixels,
    scores ``[B, N]``, labels ``[B, N]``, in the order `split_outputs` finds them."""
    boxes, scores, labels = split_outputs([o.shape for o in outputs], outputs)
    return [_select(b, s, lab, conf) for b, s, lab in zip(boxes, scores, labels, strict=True)]


def split_outputs(shapes, outputs=None):
    """The (boxes, scores, labels) outputs of a three-output model, told apart by
    shape (boxes end in 4) and type (labels are integers, or the last output)."""
    idx = list(range(len(shapes)))
    box = [i for i in idx if len(shapes[i]) == 3 and shapes[i][2] == 4]
    rest = [i for i in idx if len(shapes[i]) == 2]
    if len(box) != 1 or len(rest) != 2:
        raise ValueError("not a boxes/scores/labels model")
    if outputs is not None:
        ints = [i for i in rest if np.issubdtype(outputs[i].dtype, np.integer)]
        if len(ints) == 1:
            rest = [i for i in rest if i not in ints] + ints
    picked = [box[0], *rest]
    return [outputs[i] for i in picked] if outputs is not None else picked


#: The layouts `reduced_on_device` takes: the axis of a candidate's values, and whether
#: an objectness (which weights the class scores) comes before the class scores.
REDUCIBLE = {"ultralytics": (1, False), "yolov5": (2, True)}


def reduced_on_device(model: bytes, layout: str) -> bytes:
    """The model with its output reduced to the `end2end` layout ``[B, N, 6]``: each
    candidate's x1, y1, x2, y2, best score and best class (float32), computed as the
    host decoder of ``layout`` (one of `REDUCIBLE`) computes them, in the model's own
    float type, bit for bit. On a GPU this runs on the device: a YOLOv8 at 640 px then
    returns 0.2 MB a tile instead of 2.8 MB, and the host takes no max over classes.
    Other outputs are dropped (the decoders read the first)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(model)
    graph, axis, weighted = proto.graph, *REDUCIBLE[layout]
    opset = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    out = graph.output[0]
    elem = out.type.tensor_type.elem_type
    dtype = helper.tensor_dtype_to_np_dtype(elem)
    nodes, counter = [], itertools.count()

    def const(value) -> str:
        name = f"geodet_reduce/c{next(counter)}"
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(op_type: str, inputs: list[str], **attrs) -> str:
        name = f"geodet_reduce/{op_type.lower()}{next(counter)}"
        nodes.append(helper.make_node(op_type, inputs, [name], **attrs))
        return name

    def part(start: int, end: int) -> str:  # values start..end of every candidate
        if opset < 10:  # the bounds became inputs
            return op("Slice", [out.name], starts=[start], ends=[end], axes=[axis])
        return op("Slice", [out.name, *(const(np.array([v], np.int64))
                                        for v in (start, end, axis))])

    first = 5 if weighted else 4
    scores = part(first, np.iinfo(np.int64).max)
    if opset >= 18:  # axes became an input
        best = op("ReduceMax", [scores, const(np.array([axis], np.int64))], keepdims=1)
    else:
        best = op("ReduceMax", [scores], axes=[axis], keepdims=1)
    if weighted:
        best = op("Mul", [best, part(4, 5)])
    centre, half = part(0, 2), op("Div", [part(2, 4), const(np.array(2, dtype))])
    values = op("Concat", [op("Sub", [centre, half]), op("Add", [centre, half]), best], axis=axis)
    if elem != TensorProto.FLOAT:
        values = op("Cast", [values], to=TensorProto.FLOAT)
    label = op("Cast", [op("ArgMax", [scores], axis=axis, keepdims=1)], to=TensorProto.FLOAT)
    rows = op("Concat", [values, label], axis=axis)
    if axis == 1:
        rows = op("Transpose", [rows], perm=[0, 2, 1])
    nodes[-1].output[0] = "geodet_detections"
    graph.node.extend(nodes)
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(
        "geodet_detections", TensorProto.FLOAT, ["batch", "candidates", 6]))
    return proto.SerializeToString()


DECODERS: dict[str, Decoder] = {
    "ultralytics": decode_ultralytics,
    "obb": decode_obb,
    "yolov5": decode_yolov5,
    "end2end": decode_end2end,
    "detr": decode_detr,
    "boxes_scores_labels": decode_boxes_scores_labels,
}

#: ``det_type`` values of the GeoDeep and Deepness metadata dialects.
DET_TYPES = {
    "yolo_v8": "ultralytics", "yolo_v9": "ultralytics", "yolo_ultralytics": "ultralytics",
    "yolo_v5_or_v7_default": "yolov5", "yolo_v5": "yolov5", "yolo_v7": "yolov5",
    "yolo_v6": "ultralytics", "yolo_ultralytics_obb": "obb",
}


def detect_layout(model: ModelInfo) -> tuple[str, str]:
    """The output layout of a model and how it was told (``metadata det_type`` or
    ``output shape``), from its metadata, output shapes and class count."""
    det_type = model.metadata.get("det_type", "").strip().strip('"').lower()
    if det_type in DET_TYPES:
        return DET_TYPES[det_type], "metadata det_type"
    shapes = model.output_shapes
    nc = len(model.names)
    if model.metadata.get("task", "").strip('"').lower() == "obb":
        return "obb", "metadata task"
    if len(shapes) == 3:
        try:
            split_outputs(shapes)
            return "boxes_scores_labels", "output shapes"
        except ValueError:
            pass
    if len(shapes) == 1 and len(shapes[0]) == 3:
        _, a, b = shapes[0]
        queries = a is not None and a <= MAX_QUERIES
        if b == 6 and queries:
            return "end2end", "output shape"
        if nc:
            if a == 4 + nc and b not in (4 + nc, 5 + nc):
                return "ultralytics", "output shape"
            if a == 5 + nc and b is not None and b > MAX_QUERIES:
                return "obb", "output shape"
            if b == 5 + nc:
                return "yolov5", "output shape"
            if b == 4 + nc:
                return "detr", "output shape"
        elif a is not None and a > 4 and (b is None or a < b):
            return "ultralytics", "output shape"
        if a is None and b is not None and b > MAX_QUERIES:  # [B, ?, many anchors]
            return "ultralytics", "output shape"
        elif b is not None and b > 5 and (a is None or b < a):
            return ("detr" if queries else "yolov5"), "output shape"
    raise InputError(
        f"model {model.path} has outputs {[list(s) for s in shapes]}, a layout geodet "
        f"does not recognise; supported layouts: {', '.join(DECODERS)} "
        "(pick one with --layout)"
    )
