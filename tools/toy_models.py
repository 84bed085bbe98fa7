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


def zero_cost(model: onnx.ModelProto, sample_outputs: dict[str, np.ndarray]) -> onnx.ModelProto:
    """A model with the input and metadata of ``model`` that computes nothing: it
    returns zeros shaped like ``sample_outputs`` (one run's outputs, batch axis
    first), for any batch. What a pipeline costs when the model is free."""
    image = model.graph.input[0]
    nodes = [helper.make_node("Shape", [image.name], ["batch"], start=0, end=1)]
    init, graph_outputs = [], []
    for name, value in sample_outputs.items():
        init.append(numpy_helper.from_array(np.array(value.shape[1:], np.int64),
                                            f"{name}_rest"))
        fill = numpy_helper.from_array(np.zeros(1, value.dtype), f"{name}_fill")
        nodes += [helper.make_node("Concat", ["batch", f"{name}_rest"], [f"{name}_shape"],
                                   axis=0),
                  helper.make_node("ConstantOfShape", [f"{name}_shape"], [name], value=fill)]
        graph_outputs.append(helper.make_tensor_value_info(
            name, helper.np_dtype_to_tensor_dtype(value.dtype), ["batch", *value.shape[1:]]))
    graph = helper.make_graph(nodes, "zero_cost", [image], graph_outputs, init)
    zero = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    zero.ir_version = 8
    helper.set_model_props(zero, {p.key: p.value for p in model.metadata_props})
    onnx.checker.check_model(zero)
    return zero


class _Graph:
    """Nodes and random initialisers of a convolutional network under construction."""

    def __init__(self, seed: int) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.init: list[onnx.TensorProto] = []
        self.rng = np.random.default_rng(seed)

    def name(self, prefix: str) -> str:
        return f"{prefix}{len(self.nodes)}"

    def const(self, value: np.ndarray, prefix: str = "c") -> str:
        name = f"{prefix}{len(self.init)}_init"
        self.init.append(numpy_helper.from_array(value, name))
        return name

    def op(self, op_type: str, inputs: list[str], **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, inputs, [out], **attrs))
        return out

    def conv(self, x: str, c_in: int, c_out: int, k: int = 1, s: int = 1, act: bool = True,
             bias: float = 0.0) -> str:
        """Convolution (batch norm folded in) and SiLU, as in Ultralytics' ``Conv``."""
        w = self.rng.normal(0, (2 / (c_in * k * k)) ** 0.5, (c_out, c_in, k, k))
        y = self.op("Conv", [x, self.const(w.astype(np.float32), "w"),
                             self.const(np.full(c_out, bias, np.float32), "b")],
                    kernel_shape=[k, k], strides=[s, s], pads=[k // 2] * 4)
        return self.op("Mul", [y, self.op("Sigmoid", [y])]) if act else y

    def c2f(self, x: str, c_in: int, c_out: int, n: int, shortcut: bool) -> str:
        c = c_out // 2
        parts = list(self.split(self.conv(x, c_in, 2 * c), [c, c]))
        for _ in range(n):
            y = self.conv(self.conv(parts[-1], c, c, 3), c, c, 3)
            parts.append(self.op("Add", [parts[-1], y]) if shortcut else y)
        return self.conv(self.op("Concat", parts, axis=1), (2 + n) * c, c_out)

    def split(self, x: str, sizes: list[int], axis: int = 1) -> list[str]:
        outs = [self.name("split") + f"_{i}" for i in range(len(sizes))]
        self.nodes.append(helper.make_node(
            "Split", [x, self.const(np.array(sizes, np.int64))], outs, axis=axis))
        return outs

    def sppf(self, x: str, c_in: int, c_out: int) -> str:
        c = c_in // 2
        ys = [self.conv(x, c_in, c)]
        for _ in range(3):
            ys.append(self.op("MaxPool", [ys[-1]], kernel_shape=[5, 5], pads=[2] * 4))
        return self.conv(self.op("Concat", ys, axis=1), 4 * c, c_out)

    def upsample(self, x: str) -> str:
        scales = self.const(np.array([1, 1, 2, 2], np.float32))
        return self.op("Resize", [x, "", scales], mode="nearest")


def yolov8n_shaped(size: int = 320, classes: int = 80, seed: int = 0) -> onnx.ModelProto:
    """A network with the layers, weights count and compute of an Ultralytics YOLOv8n
    export (``[B, 4 + classes, N]`` output at ``size`` px), with random weights.

    For timing only: the class biases are so low that it detects nothing, so what is
    measured is the network, not the merging of random boxes.
    """
    g = _Graph(seed)
    x = g.conv("images", 3, 16, 3, 2)
    x = g.c2f(g.conv(x, 16, 32, 3, 2), 32, 32, 1, True)
    p3 = g.c2f(g.conv(x, 32, 64, 3, 2), 64, 64, 2, True)
    p4 = g.c2f(g.conv(p3, 64, 128, 3, 2), 128, 128, 2, True)
    p5 = g.sppf(g.c2f(g.conv(p4, 128, 256, 3, 2), 256, 256, 1, True), 256, 256)
    h4 = g.c2f(g.op("Concat", [g.upsample(p5), p4], axis=1), 384, 128, 1, False)
    h3 = g.c2f(g.op("Concat", [g.upsample(h4), p3], axis=1), 192, 64, 1, False)
    h4 = g.c2f(g.op("Concat", [g.conv(h3, 64, 64, 3, 2), h4], axis=1), 192, 128, 1, False)
    h5 = g.c2f(g.op("Concat", [g.conv(h4, 128, 128, 3, 2), p5], axis=1), 384, 256, 1, False)
    levels, anchors, strides = [], [], []
    for feat, c_in, stride in ((h3, 64, 8), (h4, 128, 16), (h5, 256, 32)):
        box = g.conv(g.conv(g.conv(feat, c_in, 64, 3), 64, 64, 3), 64, 64, act=False)
        cls = g.conv(g.conv(g.conv(feat, c_in, 80, 3), 80, 80, 3), 80, classes, act=False,
                     bias=-12.0)
        levels.append(g.op("Reshape", [g.op("Concat", [box, cls], axis=1),
                                       g.const(np.array([0, 64 + classes, -1], np.int64))]))
        side = size // stride
        ys, xs = np.mgrid[0:side, 0:side] + 0.5
        anchors.append(np.stack([xs.ravel(), ys.ravel()]))
        strides.append(np.full(side * side, stride))
    raw = g.op("Concat", levels, axis=2)  # (B, 64 + classes, A)
    dist, cls = g.split(raw, [64, classes])
    # Distribution focal loss decoding: softmax over 16 bins, expectation of the bin.
    bins = g.op("Softmax", [g.op("Reshape", [dist, g.const(np.array([0, 4, 16, -1],
                                                                    np.int64))])], axis=2)
    ltrb = g.op("ReduceSum", [g.op("Mul", [bins, g.const(
        np.arange(16, dtype=np.float32).reshape(1, 1, 16, 1))]),
        g.const(np.array([2], np.int64))], keepdims=0)  # (B, 4, A)
    lt, rb = g.split(ltrb, [2, 2])
    anchor = g.const(np.concatenate(anchors, axis=1).astype(np.float32)[None])
    centre = g.op("Add", [anchor, g.op("Mul", [g.op("Sub", [rb, lt]),
                                                g.const(np.array(0.5, np.float32))])])
    stride = g.const(np.concatenate(strides).astype(np.float32)[None, None])
    xywh = g.op("Mul", [g.op("Concat", [centre, g.op("Add", [lt, rb])], axis=1), stride])
    g.nodes.append(helper.make_node("Concat", [xywh, g.op("Sigmoid", [cls])], ["output0"],
                                    axis=1))
    n = int(sum(len(s) for s in strides))
    graph = helper.make_graph(
        g.nodes, "yolov8n_shaped",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT,
                                       ["batch", 4 + classes, n])], g.init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    helper.set_model_props(model, {
        "names": json.dumps({str(i): f"class{i}" for i in range(classes)}),
        "imgsz": json.dumps([size, size]), "task": "detect", "stride": "32"})
    onnx.checker.check_model(model)
    return model
