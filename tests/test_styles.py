"""The QGIS default styles, layer descriptions and GeoPackage version of geodet's output,
read back from real GeoPackages written by geodet.detect (QGIS itself: test_qgis.py)."""

from __future__ import annotations

import sqlite3
import xml.etree.ElementTree as ET

import pyogrio
import pytest

import geodet
from geodet.styles import FAILED_LABEL, FAILED_RGB, PALETTE, detections_style, tiles_style
from tests.helpers import scene_with_squares, write_tif

pytestmark = pytest.mark.usefixtures("ray_local")


def outlines(qml: str) -> dict[str, dict[str, str]]:
    """Category value -> the options of its symbol layer, as QGIS reads them."""
    root = ET.fromstring(qml)
    symbols = {s.get("name"): {o.get("name"): o.get("value") for o in s.iter("Option")
                               if o.get("name")}
               for s in root.iter("symbol")}
    return {c.get("value"): symbols[c.get("symbol")] for c in root.iter("category")}


def test_detections_style_colours_classes_and_shows_class_and_score():
    root = ET.fromstring(detections_style(["car", "truck"]))
    assert root.find("renderer-v2").get("attr") == "class_name"
    cats = outlines(detections_style(["car", "truck"]))
    assert list(cats) == ["car", "truck"]
    assert [c["outline_color"] for c in cats.values()] == [
        ",".join(map(str, (*PALETTE[i], 255))) for i in range(2)]
    assert all(c["style"] == "no" for c in cats.values())  # outlines only
    assert root.find("previewExpression").text == (
        "\"class_name\" || ' ' || format_number(\"score\", 2)")
    assert '[% "class_name" %]' in root.find("mapTip").text
    assert root.get("labelsEnabled") == "0"


def test_tiles_style_keeps_the_imagery_visible_and_labels_failures():
    root = ET.fromstring(tiles_style())
    assert root.find("renderer-v2").get("attr") == "status"
    cats = outlines(tiles_style())
    assert list(cats) == ["done", "empty", "skipped", "failed"]
    assert all(c["style"] == "no" for c in cats.values())
    assert all(float(c["outline_width"]) <= 0.2 for s, c in cats.items() if s != "failed")
    assert cats["failed"]["outline_color"] == ",".join(map(str, (*FAILED_RGB, 255)))
    assert root.find("renderer-v2").get("symbollevels") == "1"  # failed drawn on top
    assert root.get("labelsEnabled") == "1"
    [rule] = root.iter("rule")
    assert rule.get("filter") == "\"status\" = 'failed'"
    assert rule.find("settings/text-style").get("fieldName") == FAILED_LABEL


def styles_and_contents(out) -> tuple[dict, dict]:
    with sqlite3.connect(out) as db:
        styles = {row[0]: row[1:] for row in db.execute(
            "SELECT f_table_name, f_table_schema, f_geometry_column, useAsDefault, styleQML "
            "FROM layer_styles")}
        contents = {row[0]: row[1:] for row in db.execute(
            "SELECT table_name, identifier, description FROM gpkg_contents")}
    return styles, contents


def test_every_spatial_layer_has_a_default_style_and_a_description(tmp_path, squares_model):
    a = write_tif(tmp_path / "a.tif", scene_with_squares((100, 100), [(10, 10)]))
    b = write_tif(tmp_path / "b.tif", scene_with_squares((100, 100), [(50, 60)]),
                  crs="EPSG:32632")
    out = tmp_path / "o.gpkg"
    run = geodet.detect([a, b], squares_model, out, progress=False).attrs["geodet"]
    spatial = {name for name, geom in pyogrio.list_layers(out) if geom}
    assert spatial == {"detections_epsg_32633", "detections_epsg_32632",
                       "tiles_epsg_32633", "tiles_epsg_32632"}
    styles, contents = styles_and_contents(out)
    assert set(styles) == spatial
    for layer, (schema, geom, default, qml) in styles.items():
        assert (schema, geom, default) == ("", "geom", 1)  # what QGIS's query matches
        field = ET.fromstring(qml).find("renderer-v2").get("attr")
        assert field == ("class_name" if layer.startswith("detections") else "status")
    assert list(outlines(styles["detections_epsg_32632"][3])) == ["bright square"]

    model = squares_model.name
    for layer in spatial:
        identifier, description = contents[layer]
        assert identifier == f"{layer} ({model})"
        assert model in description and run["started_utc"] in description
        assert description.startswith("Detected objects" if layer.startswith("detections")
                                      else "Footprints of the tiles")
    assert "Provenance" in contents["geodet_runs"][1]


def test_geopackage_version_is_1_2(tmp_path, squares_model):
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((64, 64), [(5, 5)]))
    out = tmp_path / "o.gpkg"
    geodet.detect(scene, squares_model, out, progress=False)
    with sqlite3.connect(out) as db:
        application_id = db.execute("PRAGMA application_id").fetchone()[0]
        user_version = db.execute("PRAGMA user_version").fetchone()[0]
    assert application_id.to_bytes(4, "big") == b"GPKG" and user_version == 10200
