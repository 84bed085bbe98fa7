"""The generated aerial scenes, the bundled detector and `geodet demo`."""

from __future__ import annotations

import numpy as np
import pyogrio
import pytest
import rasterio

import geodet
from geodet.cli import main
from geodet.demo import bundled_model
from geodet.evaluate import evaluate
from geodet.synthetic import CLASSES, vehicle_scene, write_truth


def test_vehicle_scene_is_deterministic_and_georeferenced(tmp_path):
    a_boxes, a_cls = vehicle_scene(tmp_path / "a.tif", size=1024, seed=5)
    b_boxes, b_cls = vehicle_scene(tmp_path / "b.tif", size=1024, seed=5)
    c_boxes, _ = vehicle_scene(tmp_path / "c.tif", size=1024, seed=6)
    np.testing.assert_array_equal(a_boxes, b_boxes)
    np.testing.assert_array_equal(a_cls, b_cls)
    assert not np.array_equal(a_boxes, c_boxes)
    with rasterio.open(tmp_path / "a.tif") as a, rasterio.open(tmp_path / "b.tif") as b:
        np.testing.assert_array_equal(a.read(), b.read())
        assert a.crs.to_epsg() == 32633 and a.res == (0.1, 0.1)
        assert a.profile["tiled"] and a.profile["compress"] == "deflate"
    assert set(a_cls) <= {0, 1} and len(a_boxes) > 20
    assert (a_boxes[:, 2:] > a_boxes[:, :2]).all()


@pytest.mark.usefixtures("ray_local")
def test_bundled_model_finds_cars_and_trucks_in_unseen_scenes(tmp_path):
    """Seeds below 1000 are never used in training (tools/train_demo_model.py)."""
    scene = tmp_path / "s.tif"
    boxes, classes = vehicle_scene(scene, size=2048, seed=7)
    truth = write_truth(tmp_path / "t.gpkg", boxes, scene, np.array(CLASSES)[classes])
    result = geodet.detect(scene, bundled_model(), tmp_path / "d.gpkg", progress=False)
    tiles = pyogrio.read_dataframe(tmp_path / "d.gpkg", layer="tiles")
    report = evaluate(result, truth, iou=0.5, tiles=tiles)
    for name in CLASSES:
        assert report[name]["tp"] >= 40, report  # both classes are really there
        assert report[name]["precision"] >= 0.9, (name, report[name])
        assert report[name]["recall"] >= 0.9, (name, report[name])
    assert report["all"]["duplicate_rate"] <= 0.005


@pytest.mark.usefixtures("ray_local")
def test_demo_command(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--size", "768", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "precision" in printed and "car" in printed
    assert {p.name for p in out.iterdir()} >= {"scene.tif", "truth.gpkg", "demo.gpkg"}
    assert len(pyogrio.read_dataframe(out / "demo.gpkg", layer="detections")) > 0


def test_demo_rejects_a_tiny_scene(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--size", "100"]) == 2
    assert "--size must be at least 256" in capsys.readouterr().err
