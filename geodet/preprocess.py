"""Preprocessing: tiles of scene values (`geodet.read`) -> the tensor the model takes."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import numpy as np

from geodet.model import ModelInfo
from geodet.scene import SceneInfo

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
    lo, scale, clip = _scaling(data.dtype.str, value_range)
    x = _scaled(data, lo, scale, out)
    if clip:
        np.clip(x, 0, 1, out=x)
    return x


@functools.lru_cache(maxsize=256)
def _scaling(dtype: str, value_range: ValueRange) -> tuple[np.ndarray, np.ndarray, bool]:
    """A value range's offset and float32 factor, and whether values of ``dtype`` need
    the clip: the same for every tile of a scene, so worked out once."""
    lo, hi = (np.array(v, np.float64).reshape(-1, 1, 1)
              for v in zip(*value_range, strict=True))
    scale = (1.0 / (hi - lo)).astype(np.float32)
    lo.flags.writeable = scale.flags.writeable = False  # shared between calls
    return lo, scale, _may_leave_unit(np.dtype(dtype), lo, scale)


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


def feeds_uint8(scenes: Sequence[SceneInfo], model: ModelInfo) -> bool:
    """Whether a float model can be fed the tiles' own 8-bit values and scale them
    itself (`scaled_on_device`): every scene is 8-bit data taken as 0..255."""
    return model.input_dtype in ("float32", "float16") and all(
        s.dtype == "uint8" and _is_8bit(s.value_range) for s in scenes)


def scaled_on_device(model: bytes, info: ModelInfo, mean: tuple[float, ...] | None,
                     std: tuple[float, ...] | None) -> bytes:
    """The model with a uint8 input that it scales itself, as `to_model_input` does
    on the host for 8-bit scenes: x * (1/255) in float32, then ``(x - mean) / std``,
    then the model's own float type. On a GPU this runs on the device, and the host
    copies a quarter of the bytes; the arithmetic is the host's, bit for bit."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(model)
    graph, name = proto.graph, info.input_name
    shape = (1, 1, 1, -1) if info.channels_last else (1, -1, 1, 1)
    inner = f"{name}__geodet_scaled"
    for node in graph.node:
        for k, used in enumerate(node.input):
            if used == name:
                node.input[k] = inner
    steps = [("Mul", np.full(info.channels, 1 / 255, np.float64).astype(np.float32))]
    steps += [(op, np.asarray(v, np.float32)) for op, v in (("Sub", mean), ("Div", std))
              if v is not None]
    half = info.input_dtype == "float16"
    names = [f"{inner}/{k}" for k in range(len(steps))] + [inner]
    if half:
        names.insert(-1, f"{inner}/{len(steps)}")
    nodes = [helper.make_node("Cast", [name], [names[0]], to=TensorProto.FLOAT)]
    for k, (op, values) in enumerate(steps):
        const = f"{inner}/{op.lower()}"
        graph.initializer.append(numpy_helper.from_array(values.reshape(shape), const))
        nodes.append(helper.make_node(op, [names[k], const], [names[k + 1]]))
    if half:
        nodes.append(helper.make_node("Cast", [names[-2]], [inner], to=TensorProto.FLOAT16))
    nodes += graph.node
    del graph.node[:]
    graph.node.extend(nodes)
    next(i for i in graph.input if i.name == name).type.tensor_type.elem_type = \
        TensorProto.UINT8
    return proto.SerializeToString()
