"""ONNX models: what a model expects and produces, and sessions on the right device.

A model is a local path or a URL (`geodet.storage`). The driver reads its bytes once;
they reach the detectors through Ray's object store (`geodet.engine`), so no node
needs a copy of the file.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from geodet import storage
from geodet.errors import InputError

if TYPE_CHECKING:
    from geodet.settings import Settings

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


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"

#: The CUDA provider's options (documented in ONNX Runtime's CUDA provider page and
#: read in its ``cuda_execution_provider_info.cc``). ``device_id`` 0 is the detector's
#: own GPU: Ray sets CUDA_VISIBLE_DEVICES of an actor that holds a GPU (or a share of
#: one) to that GPU alone (``set_visible_accelerator_ids`` in ``ray._private.utils``),
#: unless RAY_EXPERIMENTAL_NOSET_CUDA_VISIBLE_DEVICES is set, which geodet does not
#: support. cuDNN convolutions are searched exhaustively once per input shape (ORT's
#: default, said here): geodet's shapes are fixed for a whole run, so the search costs
#: seconds once and the fastest kernels then run for every tile. Copies stay on the
#: compute stream (ORT's default; separate streams may race, ORT issue 4829).
#:
#: IO binding is not used: each batch comes from host memory (the reader thread) and
#: must reach the GPU anyway; binding the input only moves that copy out of
#: ``session.run``, and binding the outputs to host memory copies them back as
#: ``run`` does. It pays where data stays on the device between runs (chained models,
#: CUDA graphs), which is not geodet's pattern.
CUDA_OPTIONS = {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE",
                "do_copy_in_default_stream": True}

#: Where TensorRT engines are cached: GEODET_TRT_CACHE, else the user's cache folder.
TRT_CACHE_ENV = "GEODET_TRT_CACHE"


def trt_cache_dir(sha256: str) -> str:
    """The TensorRT engine cache folder of a model, on this machine: one folder per
    model (its SHA-256), because ONNX Runtime names the engines of a model given as
    bytes after its graph's structure, not its weights, so two fine-tunes of one
    architecture would otherwise share an engine."""
    root = os.environ.get(TRT_CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "geodet", "trt")
    return os.path.join(root, sha256[:16])


def trt_options(settings: Settings) -> dict:
    """The TensorRT provider's options for a run: fp16, an engine and a timing cache
    (ORT's TensorRT provider page, "Execution Provider Options"), and for an input
    with dynamic axes one optimisation profile covering every batch geodet feeds
    (1 to the batch size, at the run's input size), so that a short last batch does
    not make TensorRT build a second engine mid-run."""
    m, cache = settings.model, trt_cache_dir(settings.model.sha256)
    options = {"device_id": 0, "trt_fp16_enable": True, "trt_engine_cache_enable": True,
               "trt_engine_cache_path": cache, "trt_timing_cache_enable": True,
               "trt_timing_cache_path": cache}
    dynamic = m.batch is None or m.height is None or m.width is None
    if dynamic and not set(m.input_name) & set(":,"):  # the profile syntax's separators
        w, h = settings.input_size

        def shape(n: int) -> str:
            dims = (n, h, w, m.channels) if m.channels_last else (n, m.channels, h, w)
            return f"{m.input_name}:{'x'.join(map(str, dims))}"

        options |= {"trt_profile_min_shapes": shape(m.batch or 1),
                    "trt_profile_opt_shapes": shape(settings.batch_size),
                    "trt_profile_max_shapes": shape(settings.batch_size)}
    return options


def execution_providers(device: str, trt: bool, available: Collection[str],
                        settings: Settings | None = None) -> list[tuple[str, dict]]:
    """The providers a detector asks ONNX Runtime for, best first, with their options:
    TensorRT (``trt``, with ``settings``), CUDA, CPU on ``cuda``, those of them the
    installed ONNX Runtime has; the CPU alone on ``cpu`` (Ray no longer hides GPUs
    from CPU workers, so the CPU is asked for explicitly)."""
    providers: list[tuple[str, dict]] = []
    if device == "cuda":
        if trt and settings is not None and TENSORRT in available and CUDA in available:
            providers.append((TENSORRT, trt_options(settings)))
        if CUDA in available:
            providers.append((CUDA, dict(CUDA_OPTIONS)))
    return [*providers, (CPU, {})]


def _session_options(threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return options


def create_session(model: bytes, device: str, threads: int, trt: bool = False,
                   settings: Settings | None = None):
    """An ONNX Runtime session of the model's bytes and the execution provider that
    actually runs it.

    ``device`` is ``cuda`` or ``cpu``; ``trt`` asks for TensorRT first on ``cuda``
    (``settings``: the run's, for its options). ONNX Runtime silently falls back to
    the CPU when CUDA is missing, so the provider in effect is read back, not assumed.
    A TensorRT session that cannot start (its libraries missing, or an engine that
    cannot be built) is replaced by one without TensorRT, quietly: the driver says so
    once for all detectors (`fallback_warning`).
    """
    import onnxruntime as ort

    providers = execution_providers(device, trt, ort.get_available_providers(), settings)
    if providers[0][0] == TENSORRT:
        with contextlib.suppress(OSError):  # else ORT says why it cannot write there
            os.makedirs(providers[0][1]["trt_engine_cache_path"], exist_ok=True)
        # ORT's own fallback would drop the CUDA options and print a banner in every
        # detector, and it logs the missing libraries as errors: one geodet warning
        # on the driver says it all.
        ort.set_default_logger_severity(4)
        try:
            session = ort.InferenceSession(model, sess_options=_session_options(threads),
                                           providers=providers, enable_fallback=0)
            return session, session.get_providers()[0]
        except Exception:  # ORT raises several unrelated types
            providers = providers[1:]
        finally:
            ort.set_default_logger_severity(2)  # ORT's default: warnings
    session = ort.InferenceSession(model, sess_options=_session_options(threads),
                                   providers=providers)
    return session, session.get_providers()[0]


def describe_providers(providers: Collection[str], trt: bool,
                       settings: Settings | None) -> str:
    """The options geodet set for the providers that ran, for ``geodet_runs``:
    ``"TensorrtExecutionProvider: trt_fp16_enable=True ...; CUDAExecutionProvider:
    device_id=0 ..."`` (with TensorRT, CUDA runs what TensorRT cannot). The engine
    cache folder is the one this machine resolves (see `trt_cache_dir`)."""
    asked = dict(execution_providers("cuda", trt, (TENSORRT, CUDA, CPU), settings))
    names = [TENSORRT, CUDA] if TENSORRT in providers else []
    names += [p for p in providers if p not in names]
    return "; ".join(f"{p}: " + (" ".join(f"{k}={v}" for k, v in asked[p].items())
                                 if asked.get(p) else "ONNX Runtime's defaults")
                     for p in names)


def fallback_warning(device: str, trt: bool, providers: Collection[str]) -> str | None:
    """What to tell the user, once, when the detectors do not run what was asked: a
    GPU (``device``: ``cuda`` where the plan gave the detectors GPUs) or TensorRT
    (``trt``); None when they do. ``providers``: what each detector runs."""
    ran = sorted(set(providers))
    tensorrt = ("TensorRT 10 for the CUDA of onnxruntime-gpu on the GPU nodes (pip install "
                "'tensorrt-cu13-libs>=10.13,<11', or 'tensorrt-cu12-libs>=10,<11' with "
                "geodet[gpu-cuda12], and its tensorrt_libs folder on the library path; "
                "the image of cluster/Dockerfile has it)")
    if device != "cuda":
        return None if not trt else (
            f"--trt asked for TensorRT, but there is no GPU to run on: the detectors run "
            f"on {', '.join(ran)}; TensorRT needs NVIDIA GPU nodes with onnxruntime-gpu "
            f"and {tensorrt}")
    if set(ran) - {CUDA, TENSORRT}:
        return (f"GPU requested but ONNX Runtime runs on {ran}: check that onnxruntime-gpu "
                "and its CUDA libraries are installed"
                + (f"; --trt also needs {tensorrt}" if trt else ""))
    if trt and ran != [TENSORRT]:
        return (f"--trt asked for TensorRT, but the detectors run on {', '.join(ran)} "
                f"(fp32, no engine cache): TensorRT did not start there (its libraries are "
                f"missing, or it could not build this model); install {tensorrt}")
    return None


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
