"""Nodata, alpha and masks: invalid pixels never make detections, empty tiles are
recorded, an all-nodata scene is refused, and a wide nodata border costs the bundled
detector no precision."""

from __future__ import annotations

import numpy as np
import onnx
import pyogrio
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from rasterio.windows import Window

import geodet
from geodet.demo import bundled_model
from geodet.errors import InputError
from geodet.evaluate import evaluate
from geodet.synthetic import CLASSES, vehicle_scene, write_truth
from tests.helpers import GSD, ORIGIN, pixel_boxes, scene_with_squares, write_tif
from tools.toy_models import constant_outputs

pytestmark = pytest.mark.usefixtures("ray_local")
TRANSFORM = from_origin(*ORIGIN, GSD, GSD)  # write_tif's default


def test_masked_pixels_are_fed_as_the_scene_mean_not_as_they_are(tmp_path, squares_model):
    """Under the alpha mask the file holds bright garbage (as some exports do): fed as
    it is, the square detector would fire all over it."""
    rgb = scene_with_squares((256, 384), [(20, 30), (300, 200)])
    rgb[:, :, 128:256] = 255
    alpha = np.full((1, 256, 384), 255, np.uint8)
    alpha[:, :, 128:256] = 0
    scene = write_tif(tmp_path / "s.tif", np.concatenate([rgb, alpha]))
    with rasterio.open(scene, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                          ColorInterp.alpha]
    out = tmp_path / "o.gpkg"
    result = geodet.detect(scene, squares_model, out, overlap=0.0, progress=False)
    assert pixel_boxes(result, TRANSFORM).tolist() == [[20, 30, 32, 42], [300, 200, 312, 212]]
    tiles = pyogrio.read_dataframe(out, layer="tiles").sort_values("tile_id")
    assert tiles["status"].tolist() == ["done", "empty", "done"] * 2  # skipped: recorded


def test_boxes_mostly_on_invalid_pixels_are_dropped(tmp_path, model_dir):
    # A model that always returns the same three boxes (64 px input = one tile): one
    # on data, one 25% on data, one on nodata only.
    boxes = np.array([[4, 4, 20, 20], [24, 4, 40, 20], [44, 4, 60, 20]], float)
    cxcywh = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2,
                       boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]], 1)
    model = model_dir / "three_boxes.onnx"
    onnx.save(constant_outputs({"output0": np.hstack([cxcywh, np.full((3, 1), 0.9)]).T}),
              model)
    data = np.full((3, 64, 64), 90, np.uint8)
    data[:, :, 28:] = 0  # nodata from column 28: the middle box is 4 / 16 on data
    scene = write_tif(tmp_path / "s.tif", data, nodata=0)
    kept = geodet.detect(scene, model, layout="ultralytics", progress=False)
    assert pixel_boxes(kept, TRANSFORM).tolist() == [[4, 4, 20, 20]]
    assert len(geodet.detect(scene, model, layout="ultralytics", min_valid=0.2,
                               progress=False)) == 2
    assert len(geodet.detect(scene, model, layout="ultralytics", min_valid=0.0,
                               progress=False)) == 3


def test_all_nodata_scene_is_refused(tmp_path, squares_model):
    scene = write_tif(tmp_path / "s.tif", np.zeros((3, 300, 300), np.uint8), nodata=0)
    with pytest.raises(InputError, match="no valid pixel"):
        geodet.detect(scene, squares_model, tmp_path / "o.gpkg", progress=False)
    assert not (tmp_path / "o.gpkg").exists()


def test_a_wide_nodata_border_costs_no_precision(tmp_path):
    """The same objects in a clean scene and in one with a 320 px nodata border around
    them: precision within 1 point, recall unchanged (bundled detector)."""
    size, border = 1664, 320
    inner = size - 2 * border
    full = tmp_path / "full.tif"
    boxes, classes = vehicle_scene(full, size=size, seed=21)
    with rasterio.open(full) as ds:
        profile, data = ds.profile, ds.read()
        clean_transform = ds.window_transform(Window(border, border, inner, inner))
    inside = slice(border, border + inner)
    write_tif(tmp_path / "clean.tif", np.ascontiguousarray(data[:, inside, inside]),
              transform=clean_transform, crs=profile["crs"])
    data[:, :border], data[:, -border:], data[:, :, :border], data[:, :, -border:] = 0, 0, 0, 0
    write_tif(tmp_path / "border.tif", data, transform=profile["transform"],
              crs=profile["crs"], nodata=0)
    clipped = np.clip(boxes, border, border + inner)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1]) >= area / 2
    truth = write_truth(tmp_path / "truth.gpkg", clipped[keep], full,
                        np.array(CLASSES)[classes[keep]])
    scores = {name: evaluate(geodet.detect(tmp_path / f"{name}.tif", bundled_model(),
                                           progress=False), truth)["all"]
              for name in ("clean", "border")}
    assert scores["clean"]["recall"] > 0.9
    assert scores["border"]["precision"] >= scores["clean"]["precision"] - 0.01
    assert scores["border"]["recall"] >= scores["clean"]["recall"] - 0.005


@pytest.mark.parametrize("size", [600, 2600])  # a mask at full resolution, and reduced
def test_a_nodata_frame_changes_nothing(tmp_path, squares_model, size):
    """Tiles are planned over the data, flush with its edges as with a raster's: a
    scene in a nodata frame gives the detections of the same scene without it, objects
    cut by the data's edge included."""
    frame = (101, 37, 55, 13)  # left, top, right, bottom
    inner = (size - frame[1] - frame[3], size - frame[0] - frame[2])  # rows, cols
    corners = [(0, 40), (inner[1] - 6, 80), (200, inner[0] - 5), (300, 0), (150, 150)]
    data = scene_with_squares(inner, corners)
    clean = write_tif(tmp_path / "clean.tif", data)
    framed = np.zeros((3, size, size), np.uint8)
    framed[:, frame[1]:size - frame[3], frame[0]:size - frame[2]] = np.maximum(data, 1)
    framed_path = write_tif(tmp_path / "framed.tif", framed, nodata=0)
    from geodet.read import data_extent, data_mask
    from geodet.scene import open_scene

    scene = open_scene(str(framed_path))
    assert data_extent(scene, data_mask(scene)) == (101, 37, size - 55, size - 13)
    want = geodet.detect(clean, squares_model, overlap=0.2, progress=False)
    got = geodet.detect(framed_path, squares_model, overlap=0.2, progress=False)
    shift = np.array([frame[0], frame[1]] * 2)
    assert len(want) >= 4
    assert sorted((pixel_boxes(got, TRANSFORM) - shift).tolist()) == \
        sorted(pixel_boxes(want, TRANSFORM).tolist())
