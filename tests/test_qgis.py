"""geodet's output in real, headless QGIS: every layer valid, in its CRS, with its
stored style, no warning from GDAL or QGIS, and a picture of the layers over the scene.

QGIS's Python bindings come from Debian packages (``apt-get install python3-qgis
qgis-providers``, QGIS 3.22 on Debian 12) and run under the system Python, so QGIS runs
in a subprocess (tools/render_qgis.py), which reports what it sees as JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.features import rasterize

import geodet
from geodet.demo import bundled_model
from geodet.styles import FAILED_LABEL, FAILED_RGB, class_colours
from geodet.synthetic import vehicle_scene
from tests.helpers import corrupt_block, pixel_boxes, scene_with_squares, write_tif

SYSTEM_PYTHON = "/usr/bin/python3"
RENDER = Path(__file__).resolve().parents[1] / "tools" / "render_qgis.py"


def _qgis_missing() -> str | None:
    """Why QGIS cannot run here, or None."""
    if not os.access(SYSTEM_PYTHON, os.X_OK):
        return f"no {SYSTEM_PYTHON}"
    done = subprocess.run([SYSTEM_PYTHON, "-c", "import qgis.core"], capture_output=True)
    return ("QGIS's Python bindings are not installed for the system Python "
            "(apt-get install python3-qgis qgis-providers)") if done.returncode else None


MISSING = _qgis_missing()
pytestmark = [pytest.mark.skipif(MISSING is not None, reason=str(MISSING)),
              pytest.mark.usefixtures("ray_local"),
              pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]


def open_in_qgis(tmp_path: Path, gpkg: Path, scene: Path) -> tuple[dict, np.ndarray]:
    """What QGIS sees of ``gpkg``, and its picture over ``scene`` (RGB)."""
    png = tmp_path / "qgis.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "XDG_RUNTIME_DIR": str(tmp_path)}
    done = subprocess.run([SYSTEM_PYTHON, str(RENDER), str(gpkg), str(scene), str(png)],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    # GDAL messages outside QGIS's handlers would go to stderr as "Warning 1: ...".
    assert not re.findall(r"^(?:Warning|ERROR) \d+:.*", done.stderr, re.M), done.stderr
    with rasterio.open(png) as ds:
        picture = ds.read()[:3]
    return json.loads(done.stdout), picture


def near(picture: np.ndarray, colour, tolerance: float = 40) -> np.ndarray:
    """Which pixels are within ``tolerance`` of ``colour``."""
    diff = picture.astype(float) - np.array(colour[:3], float)[:, None, None]
    return np.sqrt((diff ** 2).sum(axis=0)) <= tolerance


def test_output_opens_styled_with_no_warning_and_renders(tmp_path):
    scene, intact = tmp_path / "scene.tif", tmp_path / "intact.tif"
    vehicle_scene(scene, size=1024, seed=6)  # 142 cars and trucks
    shutil.copy(scene, intact)  # QGIS draws the intact copy: no read errors there
    corrupt_block(scene, 1, 1)
    out = tmp_path / "out.gpkg"
    geodet.detect(scene, bundled_model(), out, progress=False)
    info, picture = open_in_qgis(tmp_path, out, intact)

    assert info["messages"] == [] and info["scene"]["valid"]
    assert set(info["layers"]) == {"detections", "tiles"}
    with sqlite3.connect(out) as db:
        contents = dict(db.execute("SELECT table_name, description FROM gpkg_contents"))
    for name, layer in info["layers"].items():
        assert layer["valid"] and layer["crs"] == "EPSG:32633"
        assert layer["features"] == pyogrio.read_info(out, layer=name)["features"]
        assert layer["renderer"] == "categorizedSymbol"
        assert layer["abstract"] == contents[name] and "vehicles.onnx" in layer["title"]
        assert not any(c["filled"] for c in layer["categories"].values())

    dets, tiles = info["layers"]["detections"], info["layers"]["tiles"]
    colours = class_colours(["car", "truck"])
    assert dets["field"] == "class_name" and dets["labels"] is None
    assert {k: c["outline"] for k, c in dets["categories"].items()} == {
        k: [*rgb, 255] for k, rgb in colours.items()}
    assert re.fullmatch(r"(car|truck) 0\.\d\d", dets["display_first"])  # as QGIS shows it
    assert re.fullmatch(r"<b>(car|truck)</b> 0\.\d\d<br>scene\.tif, tile \d+",
                        dets["map_tip_first"])
    assert tiles["display_first"] == "scene.tif tile 0: done"
    assert tiles["field"] == "status" and tiles["symbol_levels"]
    assert list(tiles["categories"]) == ["done", "empty", "skipped", "failed"]
    assert tiles["categories"]["failed"]["outline"] == [*FAILED_RGB, 255]
    assert tiles["labels"] == "rule-based"
    assert tiles["label_rules"] == [{"filter": "\"status\" = 'failed'",
                                     "text": FAILED_LABEL}]

    # The picture: the scene at 1:1 under the layers.
    assert info["png"]["size"] == [1024, 1024] and picture.shape == (3, 1024, 1024)
    with rasterio.open(intact) as ds:
        pixels, transform = ds.read(), ds.transform
    found = pyogrio.read_dataframe(out, layer="detections")
    hits = [near(picture[:, (r0 + r1) // 2, c0 - 1:c0 + 2, None], colours[cls]).any()
            for (c0, r0, _, r1), cls in zip(pixel_boxes(found, transform),
                                            found["class_name"], strict=True)]
    assert len(hits) > 50 and np.mean(hits) > 0.95  # each box outlined in its colour
    footprints = pyogrio.read_dataframe(out, layer="tiles")
    failed = footprints[footprints["status"] == "failed"]
    assert len(failed) > 0
    for c0, r0, _, r1 in pixel_boxes(failed, transform):
        assert near(picture[:, r0:r1, c0 - 1:c0 + 1], FAILED_RGB).any(axis=1).mean() > 0.8
    inside = shapely.buffer(failed.geometry.values, -0.5)  # away from the outlines
    labelled = rasterize(inside, out_shape=(1024, 1024), transform=transform) > 0
    assert (near(picture, FAILED_RGB) & labelled).sum() > 30  # the error's text, in red
    # No fill: away from boxes, outlines and labels, the imagery shows unchanged.
    drawn = np.concatenate([shapely.buffer(found.geometry.values, 0.3),
                            shapely.buffer(shapely.boundary(footprints.geometry.values), 0.3),
                            failed.geometry.values])
    free = rasterize(drawn, out_shape=(1024, 1024), transform=transform,
                     all_touched=True) == 0
    assert free.mean() > 0.3
    assert np.abs(picture[:, free].astype(int) - pixels[:, free]).max() <= 2


def test_every_layer_of_a_multi_crs_output_is_styled(tmp_path, squares_model):
    a = write_tif(tmp_path / "a.tif", scene_with_squares((100, 100), [(10, 10)]))
    b = write_tif(tmp_path / "b.tif", scene_with_squares((100, 100), [(50, 60)]),
                  crs="EPSG:32632")
    out = tmp_path / "o.gpkg"
    geodet.detect([a, b], squares_model, out, progress=False)
    info, _ = open_in_qgis(tmp_path, out, a)
    assert info["messages"] == []
    assert set(info["layers"]) == {"detections_epsg_32633", "detections_epsg_32632",
                                   "tiles_epsg_32633", "tiles_epsg_32632"}
    for name, layer in info["layers"].items():
        assert layer["valid"] and layer["crs"] == "EPSG:" + name.rsplit("_", 1)[1]
        assert layer["field"] == ("class_name" if name.startswith("detections") else "status")


def test_warnings_on_opening_are_caught(tmp_path, squares_model):
    # The check above can fail: a GeoPackage of a version GDAL does not know (1.9)
    # makes it warn on opening, and the warning comes back.
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((64, 64), [(5, 5)]))
    out = tmp_path / "o.gpkg"
    geodet.detect(scene, squares_model, out, progress=False)
    with sqlite3.connect(out) as db:
        db.execute("PRAGMA user_version = 10900")
    info, _ = open_in_qgis(tmp_path, out, scene)
    assert any("may only be partially supported" in m["text"] for m in info["messages"])
