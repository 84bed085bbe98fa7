"""ONNX models: what a model expects and produces, and sessions on the right device.

A model is a local path or a URL (`geodet.storage`). The driver reads its bytes once;
they reach the detectors through Ray's object store (`geodet.engine`), so no node
needs a copy of the file.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
from dataclasses import dataclass, field

from geodet import storage
from geodet.errors import InputError

_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16",
               "tensor(uint8)": "uint8"}


@dataclass(frozen=True)
class ModelInfo:
    """The facts about a model that planning, preprocessing and decoding need."""

    path: str  # the path or URL it was read from
    sha256: str
    input_name: str
    input_dtype: str  # float32, float16 or uint8
    batch: int | None  # fixed batch size, or None for a dynamic batch axis
    channels: int
    height: int | None  # None: dynamic spatial axis
    width: int | None
    output_shapes: tuple[tuple[int | None, ...], ...]
    names: dict[int, str] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    channels_last: bool = False  # NHWC input
    #: Settings the model declares: name -> (value, metadata key it came from).
    declared: dict[str, tuple[object, str]] = field(default_factory=dict)

    def class_name(self, class_id: int) -> str:
        return self.names.get(class_id, str(class_id))


def _dim(d) -> int | None:
    return d if isinstance(d, int) and d > 0 else None


def parse_value(raw: str):
    """A metadata value: JSON, else a Python literal, else the string itself."""
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(raw)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return raw


def parse_names(raw: str) -> dict[int, str]:
    """Class names from metadata: a JSON or Python-literal dict (int or str keys) or list."""
    value = parse_value(raw)
    if isinstance(value, list):
        return {i: str(v) for i, v in enumerate(value)}
    if isinstance(value, dict):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except ValueError:
            return {}
    return {}


def _number(raw: str) -> float | None:
    value = parse_value(raw)
    if isinstance(value, str):
        value = parse_value(value)  # doubly encoded: "\"0.3\""
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _floats(raw: str) -> tuple[float, ...] | None:
    value = parse_value(raw)
    if isinstance(value, (int, float)):
        value = [value]
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None


def declared_settings(meta: dict[str, str]) -> dict[str, tuple[object, str]]:
    """Settings from the Ultralytics, GeoDeep and Deepness metadata dialects, each
    with the key it came from. Unparseable values are ignored."""
    found: dict[str, tuple[object, str]] = {}

    def put(name, key, convert):
        if name not in found and key in meta:
            value = convert(meta[key])
            if value is not None:
                found[name] = (value, key)

    put("conf", "det_conf", _number)
    put("iou", "det_iou_thresh", _number)
    put("gsd", "resolution", lambda r: (v / 100 if (v := _number(r)) else None))  # cm/px
    put("overlap", "tiles_overlap", lambda r: (v / 100 if (v := _number(r)) else None))
    for key in ("tile_size", "tiles_size"):
        put("tile_size", key, lambda r: (int(v) if (v := _number(r)) else None))
    put("mean", "standardization_mean", _floats)
    put("std", "standardization_std", _floats)
    return found


def read_model(source: str | os.PathLike) -> bytes:
    """The bytes of a model file or URL, raising `InputError` if there are none."""
    path = os.fspath(source)
    if storage.is_url(path):
        return storage.read_bytes(path)
    if not os.path.isfile(path):
        raise InputError(f"model not found: {path}: give the path or URL of an .onnx file")
    with open(path, "rb") as f:
        return f.read()


def inspect_model(source: str | os.PathLike, data: bytes | None = None) -> ModelInfo:
    """Load a model on the CPU and describe it, raising `InputError` if it is unusable.
    ``data``: the model's bytes, if already read (`read_model`)."""
    import onnxruntime as ort

    path = os.fspath(source)
    data = read_model(path) if data is None else data
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises several unrelated types for a bad file
        reason = str(e).splitlines()[0][:200]
        raise InputError(
            f"cannot load model as ONNX: {path} ({reason}): give an ONNX export of a "
            "detector"
        ) from None
    inputs = session.get_inputs()
    if len(inputs) != 1 or len(inputs[0].shape) != 4:
        shapes = ", ".join(f"{i.name}{i.shape}" for i in inputs)
        raise InputError(
            f"model {path} has inputs {shapes}: geodet needs one image input shaped "
            "[batch, channels, height, width]"
        )
    inp = inputs[0]
    if inp.type not in _ORT_DTYPES:
        raise InputError(f"model {path} takes {inp.type} input; geodet feeds float or uint8")
    dims = [_dim(d) for d in inp.shape]
    channels_last = dims[3] in (1, 3, 4) and dims[1] not in (1, 3, 4)
    channels, height, width = (dims[3], dims[1], dims[2]) if channels_last else dims[1:]
    if channels is None:
        raise InputError(f"model {path} has no fixed channel count in its input {inp.shape}")
    meta = dict(session.get_modelmeta().custom_metadata_map)
    names_key = next((k for k in ("names", "class_names") if k in meta), None)
    return ModelInfo(
        path=path, sha256=hashlib.sha256(data).hexdigest(), input_name=inp.name,
        input_dtype=_ORT_DTYPES[inp.type], batch=dims[0], channels=channels,
        height=height, width=width,
        output_shapes=tuple(tuple(_dim(d) for d in o.shape) for o in session.get_outputs()),
        names=parse_names(meta[names_key]) if names_key else {},
        metadata=meta, channels_last=channels_last, declared=declared_settings(meta),
    )


def create_session(model: bytes, device: str, threads: int):
    """An ONNX Runtime session of the model's bytes and the execution provider that
    actually runs it.

    ``device`` is ``cuda`` or ``cpu``. ONNX Runtime silently falls back to the CPU
    when CUDA is missing, so the provider in effect is read back, not assumed.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    providers = ["CPUExecutionProvider"]
    if device == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    session = ort.InferenceSession(model, sess_options=options, providers=providers)
    return session, session.get_providers()[0]


def describe(info: ModelInfo, layout: tuple[str, str] | None, layout_error: str = "") -> str:
    """A human-readable summary of a model, each value with where it came from."""
    dims = ["batch" if info.batch is None else str(info.batch), str(info.channels),
            str(info.height or "dynamic"), str(info.width or "dynamic")]
    lines = [
        f"model      {info.path}",
        f"sha256     {info.sha256}",
        f"input      {info.input_name} [{', '.join(dims)}] {info.input_dtype} "
        f"({'NHWC' if info.channels_last else 'NCHW'})",
        f"outputs    {', '.join(str(list(s)) for s in info.output_shapes)}",
        f"layout     {layout[0]} (from {layout[1]})" if layout else f"layout     {layout_error}",
    ]
    names = ", ".join(f"{k}: {v}" for k, v in sorted(info.names.items())) or "none declared"
    lines.append(f"classes    {names}")
    for name in ("gsd", "tile_size", "overlap", "conf", "iou", "mean", "std"):
        if name in info.declared:
            value, key = info.declared[name]
            unit = " m/px" if name == "gsd" else ""
            lines.append(f"{name:<10} {value}{unit} (metadata {key})")
    other = sorted(set(info.metadata) - {k for _, k in info.declared.values()}
                   - {"names", "class_names"})
    if other:
        lines.append(f"metadata   {', '.join(other)}")
    return "\n".join(lines)
