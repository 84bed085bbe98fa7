"""End to end through real rasterio, ONNX Runtime, a local Ray cluster and GeoPackage."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pyogrio
import pytest
import shapely
from affine import Affine

import geodet
from geodet.errors import InputError
from tests.helpers import GSD, ORIGIN, corrupt_block, footprint, scene_with_squares, write_tif
from tools.toy_models import bright_squares

pytestmark = pytest.mark.usefixtures("ray_local")

K = 12  # side of the bright squares the test model finds


def assert_same_boxes(result, expected: list[shapely.Polygon]) -> None:
    got = sorted(result.geometry, key=lambda g: g.bounds)
    want = sorted(expected, key=lambda g: g.bounds)
    assert len(got) == len(want), f"{len(got)} detections, expected {len(want)}"
    for g, w in zip(got, want, strict=True):
        np.testing.assert_allclose(g.bounds, w.bounds, rtol=0, atol=1e-6)


def test_object_seen_by_several_tiles_is_one_exact_detection(tmp_path, squares_model):
    # Tiles of 128 px with overlap 0.5 start at 0, 64, 128, 172: the square at
    # (100, 100) lies whole in four tiles; the one at (120, 40) is cut by the edge
    # of the first tile column (a fragment there) and whole in the second.
    objects = [(100, 100), (120, 40)]
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((300, 300), objects))
    result = geodet.detect(scene, squares_model, tmp_path / "out.gpkg", overlap=0.5,
                           progress=False)
    assert_same_boxes(result, [footprint(x, y) for x, y in objects])
    np.testing.assert_allclose(result["score"], 240 / 255, rtol=1e-6)
    assert set(result["class_name"]) == {"bright square"}
    run = result.attrs["geodet"]
    assert run["tiles_total"] == 16 and run["tiles_done"] == 16 and run["tiles_failed"] == 0
    assert json.loads(run["execution_providers"]) == ["CPUExecutionProvider"]


def test_geopackage_layers_fields_crs_and_style(tmp_path, squares_model):
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((200, 260), [(30, 40)]))
    out = tmp_path / "out.gpkg"
    geodet.detect(scene, squares_model, out, progress=False)
    layers = dict(pyogrio.list_layers(out).tolist())
    assert layers == {"detections": "Polygon", "tiles": "Polygon", "geodet_runs": None,
                      "layer_styles": None}
    info = pyogrio.read_info(out, layer="detections")
    assert dict(zip(info["fields"], info["ogr_types"], strict=True)) == {
        "class_id": "OFTInteger", "class_name": "OFTString", "score": "OFTReal",
        "scene": "OFTString", "tile_id": "OFTInteger64"}
    assert info["crs"] == "EPSG:32633" and info["geometry_name"] == "geom"
    dets = pyogrio.read_dataframe(out, layer="detections")
    assert_same_boxes(dets, [footprint(30, 40)])
    assert dets["scene"].tolist() == ["s.tif"]
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert set(tiles.columns) >= {"scene", "tile_id", "status", "n_detections"}
    assert (tiles["status"] == "done").all() and tiles["n_detections"].sum() == 1
    assert shapely.union_all(tiles.geometry).equals(
        shapely.box(ORIGIN[0], ORIGIN[1] - 200 * GSD, ORIGIN[0] + 260 * GSD, ORIGIN[1]))
    [run] = pyogrio.read_dataframe(out, layer="geodet_runs").to_dict("records")
    assert run["model_sha256"] and run["detections"] == 1 and run["layout"] == "ultralytics"
    style, _ = pyogrio.read_dataframe(out, layer="layer_styles").to_dict("records")
    assert (style["f_table_schema"], style["f_table_name"], style["f_geometry_column"],
            style["useAsDefault"]) == ("", "detections", "geom", True)
    assert 'attr="class_name"' in style["styleQML"]
    assert 'value="bright square"' in style["styleQML"]
    assert not list(tmp_path.glob(".*partial*")), "no temporary file is left behind"


def test_rotated_scene_boxes_follow_the_transform(tmp_path, squares_model):
    t = Affine.translation(1000, 2000) @ Affine.rotation(25) @ Affine.scale(0.5, -0.5)
    scene = write_tif(tmp_path / "r.tif", scene_with_squares((150, 150), [(60, 70)]),
                      transform=t)
    [poly] = geodet.detect(scene, squares_model, progress=False).geometry
    corners = [t * (60, 70), t * (72, 70), t * (72, 82), t * (60, 82)]
    np.testing.assert_allclose(np.array(poly.exterior.coords)[:4], corners, atol=1e-9)


def test_raster_smaller_than_a_tile_is_padded(tmp_path, squares_model):
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((50, 70), [(5, 30)]))
    result = geodet.detect(scene, squares_model, progress=False)
    assert_same_boxes(result, [footprint(5, 30)])


def test_same_output_whatever_the_batch_and_a_fixed_batch_model(tmp_path, squares_model):
    rng = np.random.default_rng(3)
    objects = [(int(x), int(y)) for x, y in rng.integers(0, 390, (40, 2)) // 20 * 20]
    objects = sorted(set(objects))
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((410, 410), objects))
    fixed = tmp_path / "fixed.onnx"
    onnx.save(bright_squares(size=128, batch=1), fixed)
    a = geodet.detect(scene, squares_model, batch_size=1, progress=False)
    b = geodet.detect(scene, squares_model, batch_size=5, progress=False)
    c = geodet.detect(scene, fixed, batch_size=8, progress=False)
    assert_same_boxes(a, [footprint(x, y) for x, y in objects])
    for other in (b, c):
        assert a.drop(columns="geometry").equals(other.drop(columns="geometry"))
        assert all(g.equals_exact(h, 0) for g, h in zip(a.geometry, other.geometry,
                                                        strict=True))


def test_uint16_scene_is_scaled(tmp_path, squares_model):
    data = scene_with_squares((100, 100), [(40, 40)]).astype(np.uint16) * 257
    scene = write_tif(tmp_path / "s.tif", data)
    assert_same_boxes(geodet.detect(scene, squares_model, progress=False),
                      [footprint(40, 40)])


def test_nodata_tiles_are_skipped(tmp_path, squares_model):
    data = scene_with_squares((256, 640), [(20, 20)])
    data[:, :, 128:384] = 0  # a hole of two tiles' width inside the data
    data[:, :, 512:] = 0  # and a border, outside the data: no tile is planned there
    scene = write_tif(tmp_path / "s.tif", data, nodata=0)
    out = tmp_path / "o.gpkg"
    result = geodet.detect(scene, squares_model, out, overlap=0.0, progress=False)
    assert_same_boxes(result, [footprint(20, 20)])
    tiles = pyogrio.read_dataframe(out, layer="tiles").sort_values("tile_id")
    assert tiles["status"].tolist() == ["done", "empty", "empty", "done"] * 2
    assert shapely.union_all(tiles.geometry).bounds == \
        shapely.union_all([footprint(0, 0, 256), footprint(256, 0, 256)]).bounds


def test_several_scenes_in_one_run(tmp_path, squares_model):
    a = write_tif(tmp_path / "a.tif", scene_with_squares((100, 100), [(10, 10)]))
    b = write_tif(tmp_path / "b.tif", scene_with_squares((100, 100), [(50, 60)]))
    result = geodet.detect([a, b], squares_model, progress=False)
    assert sorted(result["scene"]) == ["a.tif", "b.tif"]
    assert_same_boxes(result, [footprint(10, 10), footprint(50, 60)])


def test_scenes_in_different_crs_get_a_layer_each_or_one_reprojected(tmp_path,
                                                                    squares_model):
    a = write_tif(tmp_path / "a.tif", scene_with_squares((100, 100), [(10, 10)]))
    b = write_tif(tmp_path / "b.tif", scene_with_squares((100, 100), [(50, 60)]),
                  crs="EPSG:32632")
    out = tmp_path / "o.gpkg"
    result = geodet.detect([a, b], squares_model, out, progress=False)
    assert result.crs.to_epsg() == 32633 and sorted(result["scene"]) == ["a.tif", "b.tif"]
    layers = dict(pyogrio.list_layers(out).tolist())
    assert {"detections_epsg_32633", "detections_epsg_32632", "tiles_epsg_32633",
            "tiles_epsg_32632"} <= set(layers)
    native = pyogrio.read_dataframe(out, layer="detections_epsg_32632")
    assert native.crs.to_epsg() == 32632 and native["scene"].tolist() == ["b.tif"]
    assert_same_boxes(native, [footprint(50, 60)])  # same numbers, its own CRS
    styles = pyogrio.read_dataframe(out, layer="layer_styles")
    assert sorted(styles["f_table_name"]) == ["detections_epsg_32632", "detections_epsg_32633",
                                              "tiles_epsg_32632", "tiles_epsg_32633"]

    out2 = tmp_path / "o2.gpkg"
    wgs = geodet.detect([a, b], squares_model, out2, out_crs="EPSG:4326", progress=False)
    assert wgs.crs.to_epsg() == 4326 and len(wgs) == 2
    assert {"detections", "tiles"} <= set(dict(pyogrio.list_layers(out2).tolist()))
    one = pyogrio.read_dataframe(out2, layer="detections")
    assert one.crs.to_epsg() == 4326 and sorted(one["scene"]) == ["a.tif", "b.tif"]
    lon, lat = one.geometry.iloc[0].centroid.coords[0]
    assert 5 < lon < 16 and 48 < lat < 49  # UTM 32N/33N near 5,400 km north


def test_bad_out_crs(tmp_path, squares_model):
    a = write_tif(tmp_path / "a.tif", scene_with_squares((50, 50), []))
    with pytest.raises(InputError, match="not a coordinate reference system"):
        geodet.detect(a, squares_model, tmp_path / "o.gpkg", out_crs="EPSG:nope",
                      progress=False)
    assert not (tmp_path / "o.gpkg").exists()


def test_unreadable_tile_is_recorded_as_failed(tmp_path, squares_model):
    data = scene_with_squares((256, 256), [(10, 10), (200, 200)])
    scene = write_tif(tmp_path / "s.tif", data, tiled=True, blockxsize=128,
                      blockysize=128, compress="deflate", interleave="band")
    corrupt_block(scene, 1, 1)
    out = tmp_path / "o.gpkg"
    result = geodet.detect(scene, squares_model, out, overlap=0.0, progress=False)
    assert result.attrs["geodet"]["tiles_failed"] == 1
    assert_same_boxes(result, [footprint(10, 10)])
    tiles = pyogrio.read_dataframe(out, layer="tiles").set_index("tile_id")
    assert tiles.loc[3, "status"] == "failed"
    error = tiles.loc[3, "error"]  # a local file: not retried; GDAL's words
    assert error.startswith("read failed: s.tif, band ") and "See previous" not in error
    assert (tiles.drop(index=3)["status"] == "done").all()


def test_packed_rows_across_seams_stay_distinct(tmp_path, squares_model):
    # Rows of squares 2 px apart, crossing every tile seam (tiles of 128, overlap 0.2).
    objects = [(x, y) for y in (20, 150, 300) for x in range(3, 380, K + 2)]
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((400, 400), objects))
    result = geodet.detect(scene, squares_model, progress=False)
    assert_same_boxes(result, [footprint(x, y) for x, y in objects])


def test_same_detections_with_one_or_several_workers(tmp_path, squares_model):
    rng = np.random.default_rng(7)
    objects = sorted({(int(x), int(y)) for x, y in rng.integers(0, 580, (80, 2)) // 16 * 16})
    scene = write_tif(tmp_path / "s.tif", scene_with_squares((600, 600), objects))
    one = geodet.detect(scene, squares_model, workers=1, batch_size=2, progress=False)
    three = geodet.detect(scene, squares_model, workers=3, batch_size=3, progress=False)
    assert three.attrs["geodet"]["workers"] == 3
    assert one.drop(columns="geometry").equals(three.drop(columns="geometry"))
    assert all(g.equals_exact(h, 0) for g, h in zip(one.geometry, three.geometry, strict=True))
