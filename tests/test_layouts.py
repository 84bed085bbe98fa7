"""Every output layout decodes to exactly the expected boxes, through the pipeline."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto

import geodet
from geodet.model import inspect_model
from tests.helpers import GSD, ORIGIN, write_tif
from tools.toy_models import constant_outputs

pytestmark = pytest.mark.usefixtures("ray_local")

NAMES = {0: "car", 1: "truck", 2: "bus"}
# Expected detections in model pixels (= scene pixels: one 64 px tile, no resampling).
BOXES = np.array([[10, 12, 30, 20], [40, 40, 50, 60]], float)
SCORES = np.array([0.9, 0.6])
CLASSES = np.array([1, 0])
LOW = np.array([5, 5, 9, 9], float)  # a candidate below --conf


def cxcywh(b):
    return np.stack([(b[..., 0] + b[..., 2]) / 2, (b[..., 1] + b[..., 3]) / 2,
                     b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]], -1)


def one_hot(classes, scores, nc=2):
    out = np.zeros((len(classes), nc))
    out[np.arange(len(classes)), classes] = scores
    return out


ALL_BOXES = np.vstack([BOXES, LOW])
ALL_SCORES = np.append(SCORES, 0.2)
ALL_CLASSES = np.append(CLASSES, 0)

LAYOUTS = {
    "ultralytics": {"output0": np.hstack([cxcywh(ALL_BOXES),
                                          one_hot(ALL_CLASSES, ALL_SCORES)]).T},
    "yolov5": {"output0": np.hstack([cxcywh(ALL_BOXES), np.full((3, 1), 0.9),
                                     one_hot(ALL_CLASSES, ALL_SCORES / 0.9)])},
    "end2end": {"output0": np.hstack([ALL_BOXES, ALL_SCORES[:, None],
                                      ALL_CLASSES[:, None]])},
    "detr": {"output0": np.hstack([cxcywh(ALL_BOXES) / 64,
                                   one_hot(ALL_CLASSES, ALL_SCORES, nc=3)])},
    "boxes_scores_labels": {"boxes": ALL_BOXES, "scores": ALL_SCORES,
                            "labels": ALL_CLASSES.astype(np.int64)},
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    path = tmp_path_factory.mktemp("layouts") / "s.tif"
    return write_tif(path, np.zeros((3, 64, 64), np.uint8))


def check(result):
    got = result.sort_values("score", ascending=False)
    x0, y0 = ORIGIN
    expected = [(x0 + b[0] * GSD, y0 - b[3] * GSD, x0 + b[2] * GSD, y0 - b[1] * GSD)
                for b in BOXES]
    np.testing.assert_allclose([g.bounds for g in got.geometry], expected, atol=1e-6)
    np.testing.assert_allclose(got["score"], SCORES, rtol=1e-5)
    assert got["class_name"].tolist() == [NAMES[c] for c in CLASSES]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_layout_is_detected_and_decoded_exactly(tmp_path, scene, layout):
    path = tmp_path / f"{layout}.onnx"
    nc = 3 if layout == "detr" else 2  # [N, 6] with 2 classes reads as end2end
    onnx.save(constant_outputs(LAYOUTS[layout], names=dict(list(NAMES.items())[:nc])), path)
    result = geodet.detect(scene, path, conf=0.5, progress=False)
    assert result.attrs["geodet"]["layout"] == layout
    check(result)
    settings = json.loads(result.attrs["geodet"]["settings"])
    assert settings["iou"] == {"value": 0.5, "source": "default"}  # no metadata, no option


def test_layout_override(tmp_path, scene):
    # Two-class DETR output [N, 6] reads as an end-to-end export: say so.
    path = tmp_path / "m.onnx"
    two = {"output0": np.hstack([cxcywh(ALL_BOXES) / 64, one_hot(ALL_CLASSES, ALL_SCORES)])}
    onnx.save(constant_outputs(two), path)
    check_names = geodet.detect(scene, path, conf=0.5, layout="detr", progress=False)
    assert sorted(check_names["class_id"].tolist()) == [0, 1]


def test_geodeep_dialect_nhwc_float16(tmp_path, scene):
    meta = {"det_type": json.dumps("YOLO_v8"),
            "class_names": json.dumps({"0": "car", "1": "truck"}),
            "det_conf": json.dumps(0.5), "det_iou_thresh": json.dumps(0.3),
            "resolution": json.dumps(10), "tiles_overlap": json.dumps(15)}
    path = tmp_path / "geodeep.onnx"
    onnx.save(constant_outputs(LAYOUTS["ultralytics"], metadata=meta, channels_last=True,
                               input_type=TensorProto.FLOAT16), path)
    info = inspect_model(path)
    assert info.channels_last and info.input_dtype == "float16"
    assert info.names == {0: "car", 1: "truck"}
    assert info.declared["gsd"] == (0.1, "resolution")
    result = geodet.detect(scene, path, progress=False)
    check(result)  # det_conf 0.5 from the metadata drops the 0.2 candidate
    settings = json.loads(result.attrs["geodet"]["settings"])
    assert settings["conf"] == {"value": 0.5, "source": "model metadata det_conf"}
    assert settings["overlap"] == {"value": 0.15, "source": "model metadata tiles_overlap"}
    assert settings["layout"] == {"value": "ultralytics", "source": "metadata det_type"}
    assert settings["gsd"]["value"] == 0.1
    # The command line wins over the metadata.
    lower = geodet.detect(scene, path, conf=0.1, progress=False)
    assert len(lower) == 3
    assert json.loads(lower.attrs["geodet"]["settings"])["conf"]["source"] == "command line"


def test_model_info(tmp_path, capsys):
    from geodet.cli import main

    path = tmp_path / "m.onnx"
    meta = {"det_type": '"YOLO_v8"', "resolution": "10", "det_conf": "0.4", "extra": "x"}
    onnx.save(constant_outputs(LAYOUTS["ultralytics"], names=NAMES, metadata=meta), path)
    assert main(["model-info", str(path)]) == 0
    out = capsys.readouterr().out
    assert "layout     ultralytics (from metadata det_type)" in out
    assert "gsd        0.1 m/px (metadata resolution)" in out
    assert "conf       0.4 (metadata det_conf)" in out
    assert "0: car, 1: truck, 2: bus" in out and "extra" in out
    odd = tmp_path / "odd.onnx"
    onnx.save(constant_outputs({"output0": np.zeros((4, 3))}), odd)
    assert main(["model-info", str(odd)]) == 0
    assert "unknown:" in capsys.readouterr().out


def test_oriented_boxes_become_rotated_polygons(tmp_path, scene):
    angle = np.pi / 6
    raw = np.array([[32, 30, 20, 8, 0.1, 0.9, angle],   # cx cy w h car truck angle
                    [10, 10, 4, 4, 0.2, 0.0, 0.0]]).T   # below --conf
    path = tmp_path / "obb.onnx"
    onnx.save(constant_outputs({"output0": raw}, names={0: "car", 1: "truck"},
                               metadata={"task": "obb"}), path)
    result = geodet.detect(scene, path, conf=0.5, progress=False)
    assert result.attrs["geodet"]["layout"] == "obb"
    [poly] = result.geometry
    c, s = np.cos(angle), np.sin(angle)
    corners = [(32 + dx * c - dy * s, 30 + dx * s + dy * c)
               for dx, dy in ((-10, -4), (10, -4), (10, 4), (-10, 4))]
    expected = [(ORIGIN[0] + x * GSD, ORIGIN[1] - y * GSD) for x, y in corners]
    np.testing.assert_allclose(np.array(poly.exterior.coords)[:4], expected, atol=1e-6)
    assert result["class_name"].tolist() == ["truck"]
    assert abs(poly.area - 20 * 8 * 0.01) < 1e-9


def test_obb_is_recognised_by_shape(tmp_path):
    path = tmp_path / "obb.onnx"
    onnx.save(constant_outputs({"output0": np.zeros((7, 1344))},
                               names={0: "car", 1: "truck"}), path)
    from geodet.decode import detect_layout

    assert detect_layout(inspect_model(path)) == ("obb", "output shape")


def test_tile_size_keeps_the_aspect_of_a_wide_input(tmp_path):
    from geodet.options import Options
    from geodet.scene import open_scene
    from geodet.settings import resolve

    path = tmp_path / "wide.onnx"
    onnx.save(constant_outputs(LAYOUTS["end2end"], size=64), path)
    wide = inspect_model(path).__class__(**{**inspect_model(path).__dict__, "width": 128})
    s = write_tif(tmp_path / "s.tif", np.zeros((3, 300, 300), np.uint8))
    settings = resolve(Options(tile_size=256), wide, [open_scene(s)])
    assert settings.input_size == (128, 64) and settings.tiles == ((256, 128),)
