"""Ground resolution: tiles are resampled so the model sees the resolution it knows."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import onnx
import pytest
import shapely
from rasterio.transform import from_origin

import geodet
from geodet.errors import InputError
from geodet.evaluate import evaluate
from geodet.scene import ground_resolution
from tests.helpers import scene_with_squares, write_tif
from tools.toy_models import bright_squares

pytestmark = pytest.mark.usefixtures("ray_local")

OBJECT_M = 1.2  # the model finds 12 px squares at 0.10 m: objects 1.2 m wide


@pytest.fixture(scope="module")
def model_10cm(tmp_path_factory):
    path = tmp_path_factory.mktemp("res") / "m10cm.onnx"
    onnx.save(bright_squares(size=128, metadata={"resolution": "10"}), path)
    return path


def scene_at(tmp_path, gsd: float, n: int = 6):
    """Objects 1.2 m wide on a grid, rendered at ``gsd`` m/px; and their truth."""
    k = round(OBJECT_M / gsd)
    side = round(40.0 / gsd)  # a 40 m x 40 m scene
    pitch = side // n
    corners = [(i * pitch + pitch // 3, j * pitch + pitch // 4)
               for i in range(n) for j in range(n)]
    corners = [(x - x % 2, y - y % 2) for x, y in corners]
    t = from_origin(500_000, 5_400_000, gsd, gsd)
    path = write_tif(tmp_path / f"s{gsd}.tif", scene_with_squares((side, side), corners, k=k),
                     transform=t)
    truth = gpd.GeoDataFrame(
        {"class_name": ["bright square"] * len(corners)},
        geometry=[shapely.box(*(t * (x, y + k)), *(t * (x + k, y))) for x, y in corners],
        crs="EPSG:32633")
    return path, truth


@pytest.mark.parametrize("gsd", [0.05, 0.1, 0.2])
def test_scene_at_another_resolution_is_detected_as_well(tmp_path, model_10cm, gsd):
    path, truth = scene_at(tmp_path, gsd)
    result = geodet.detect(path, model_10cm, progress=False)
    report = evaluate(result, truth)["all"]
    assert report["precision"] == 1.0 and report["recall"] == 1.0, report
    params = json.loads(result.attrs["geodet"]["parameters"])
    assert params["gsd"] == 0.1
    assert params["tiles"] == [[round(128 * 0.1 / gsd)] * 2]


def test_without_gsd_a_finer_scene_is_missed(tmp_path, model_10cm):
    path, truth = scene_at(tmp_path, 0.05)
    result = geodet.detect(path, model_10cm, tile_size=128, progress=False)
    assert evaluate(result, truth)["all"]["recall"] < 0.5


def test_gsd_and_tile_size_conflict(tmp_path, model_10cm):
    path, _ = scene_at(tmp_path, 0.1)
    with pytest.raises(InputError, match="--gsd or --tile-size"):
        geodet.detect(path, model_10cm, gsd=0.1, tile_size=128, progress=False)


def test_ground_resolution_in_feet_and_degrees():
    from rasterio.crs import CRS

    feet = ground_resolution(CRS.from_epsg(2263), from_origin(0, 0, 1.0, 1.0), 100)
    assert feet == pytest.approx((0.3048006, 0.3048006), rel=1e-5)
    deg = ground_resolution(CRS.from_epsg(4326), from_origin(10, 60.0005, 1e-5, 1e-5), 100)
    assert deg[0] == pytest.approx(1e-5 * 111_320 * np.cos(np.radians(60)), rel=1e-4)
    assert deg[1] == pytest.approx(1e-5 * 110_574, rel=1e-6)
