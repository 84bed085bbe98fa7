"""Small ONNX detectors built with onnx.helper, whose outputs are known exactly.

Developer tool (needs the `onnx` package): used by the tests, and to build the demo
model bundled as geodet/data/bright_squares.onnx::

    python -m tools.toy_models geodet/data/bright_squares.onnx

`bright_squares` is a template detector in the Ultralytics layout [B, 4 + nc, N]:
it finds bright ``k`` x ``k`` squares. The grey level (channel mean) is averaged over
every ``k`` x ``k`` window; a window whose mean exceeds ``threshold`` and is the
maximum within ``k - 1`` pixels is a detection with that mean as its score and
exactly that window as its box. On a pixel-aligned bright square the box is exact to
the pixel; rows of squares a few pixels apart give one box per square; a square cut
by the tile edge gives a shifted box (a fragment) when enough of it is visible.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def bright_squares(size: int = 256, k: int = 12, threshold: float = 0.5,
                   channels: int = 3, batch: int | str = "batch",
                   names: dict[int, str] | None = None,
                   metadata: dict[str, str] | None = None) -> onnx.ModelProto:
    """The bright-square detector for ``size`` x ``size`` inputs (see module doc)."""
    names = names or {0: "bright square"}
    n_side = size - k + 1
    n = n_side * n_side
    rows, cols = np.meshgrid(np.arange(n_side), np.arange(n_side), indexing="ij")
    boxes = np.stack([cols.ravel() + k / 2, rows.ravel() + k / 2,
                      np.full(n, k), np.full(n, k)]).astype(np.float32)[None]  # (1,4,N)
    nc = len(names)
    init = [
        numpy_helper.from_array(boxes, "boxes"),
        numpy_helper.from_array(np.array([threshold], np.float32), "threshold"),
        numpy_helper.from_array(np.array([0, 1, n], np.int64), "flat_shape"),
        numpy_helper.from_array(np.array([0.0], np.float32), "zero"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["grey"], axes=[1], keepdims=1),
        helper.make_node("AveragePool", ["grey"], ["mean"], kernel_shape=[k, k]),
        helper.make_node("MaxPool", ["mean"], ["local_max"], kernel_shape=[2 * k - 1] * 2,
                         pads=[k - 1] * 4),
        helper.make_node("Equal", ["mean", "local_max"], ["is_peak"]),
        helper.make_node("Greater", ["mean", "threshold"], ["is_bright"]),
        helper.make_node("And", ["is_peak", "is_bright"], ["keep"]),
        helper.make_node("Cast", ["keep"], ["keep_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["mean", "keep_f"], ["score_map"]),
        helper.make_node("Reshape", ["score_map", "flat_shape"], ["score"]),  # (B,1,N)
        helper.make_node("Mul", ["score", "zero"], ["zeros"]),
        helper.make_node("Add", ["boxes", "zeros"], ["boxes_b"]),  # (B,4,N)
    ]
    # One score row per class: the detection goes to class 0; the others stay 0.
    score_rows = ["score"] + ["zeros"] * (nc - 1)
    nodes.append(helper.make_node("Concat", ["boxes_b", *score_rows], ["output0"], axis=1))
    graph = helper.make_graph(
        nodes, "bright_squares",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT,
                                       [batch, channels, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [batch, 4 + nc, n])],
        init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"names": json.dumps({str(i): v for i, v in names.items()}),
            "imgsz": json.dumps([size, size]), "task": "detect"}
    meta.update(metadata or {})
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="path of the .onnx file to write")
    args = parser.parse_args()
    onnx.save(bright_squares(), args.out)


if __name__ == "__main__":
    main()


def constant_outputs(outputs: dict[str, np.ndarray], size: int = 64, channels: int = 3,
                     names: dict[int, str] | None = None,
                     metadata: dict[str, str] | None = None,
                     input_type: int = TensorProto.FLOAT,
                     channels_last: bool = False) -> onnx.ModelProto:
    """A model that ignores its image and returns the given arrays (each without the
    batch axis, repeated for every image): exact, known outputs for any layout.
    Integer arrays come out as int64."""
    image_shape = ["batch", size, size, channels] if channels_last else \
        ["batch", channels, size, size]
    nodes = [helper.make_node("Cast", ["images"], ["image_f"], to=TensorProto.FLOAT),
             helper.make_node("ReduceMean", ["image_f"], ["total"], axes=[1, 2, 3],
                              keepdims=1),
             helper.make_node("Mul", ["total", "zero"], ["nothing"])]  # (B,1,1,1)
    init = [numpy_helper.from_array(np.array([0.0], np.float32), "zero")]
    graph_outputs = []
    for name, value in outputs.items():
        rank = value.ndim + 1
        shape = np.array([-1] + [1] * (rank - 1), np.int64)
        init += [numpy_helper.from_array(value[None].astype(np.float32), f"{name}_value"),
                 numpy_helper.from_array(shape, f"{name}_shape")]
        nodes += [helper.make_node("Reshape", ["nothing", f"{name}_shape"], [f"{name}_b"]),
                  helper.make_node("Add", [f"{name}_value", f"{name}_b"],
                                   [name if value.dtype.kind == "f" else f"{name}_f"])]
        out_type = TensorProto.FLOAT
        if value.dtype.kind != "f":
            nodes.append(helper.make_node("Cast", [f"{name}_f"], [name], to=TensorProto.INT64))
            out_type = TensorProto.INT64
        graph_outputs.append(helper.make_tensor_value_info(
            name, out_type, ["batch", *value.shape]))
    graph = helper.make_graph(
        nodes, "constant_outputs",
        [helper.make_tensor_value_info("images", input_type, image_shape)],
        graph_outputs, init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    meta = {"names": json.dumps({str(i): v for i, v in (names or {}).items()})} if names \
        else {}
    meta.update(metadata or {})
    if meta:
        helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    return model
