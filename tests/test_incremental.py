"""Incremental runs over a growing folder: only new or changed scenes are processed."""

from __future__ import annotations

import os

import pyogrio
import pytest
from rasterio.transform import from_origin

import geodet
from geodet.cli import main
from geodet.errors import InputError
from tests.helpers import GSD, ORIGIN, corrupt_block, scene_with_squares, write_tif
from tests.test_cloud_path import BUCKET, detect_cli
from tests.test_cloud_path import bucket as s3_bucket  # noqa: F401 (the `bucket` fixture)

pytestmark = pytest.mark.usefixtures("ray_local")

# Two scenes of one mosaic, side by side: b starts where a ends (300 px east).
SQUARES = {"a.tif": [(20, 30), (150, 160), (280, 100)], "b.tif": [(5, 100), (200, 40)]}


def add_scene(folder, name, squares=None):
    east = ORIGIN[0] + (300 * GSD if name == "b.tif" else 0)
    return write_tif(folder / name, scene_with_squares((300, 300), squares or SQUARES[name]),
                     transform=from_origin(east, ORIGIN[1], GSD, GSD))


def runs(out):
    return pyogrio.read_dataframe(out, layer="geodet_runs")


def detections(out):
    return pyogrio.read_dataframe(out, layer="detections")


def test_growing_folder_then_nothing_new(tmp_path, capsys, squares_model):
    model = squares_model
    folder = tmp_path / "flights"
    folder.mkdir()
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    add_scene(folder, "a.tif")
    geodet.detect(pattern, model, out, incremental=True, progress=False)
    add_scene(folder, "b.tif")
    geodet.detect(pattern, model, out, incremental=True, progress=False)
    before = os.stat(out).st_mtime_ns
    assert main(["detect", pattern, "--model", str(model), "--out", str(out),
                 "--incremental", "--no-progress"]) == 0
    assert "0 detections in 0 tiles" in capsys.readouterr().out

    # every tile of a, then every tile of b, then none: 9 tiles a scene
    assert runs(out)["tiles_done"].tolist() == [9, 9, 0]
    assert os.stat(out).st_mtime_ns != before  # the third run is recorded too
    oneshot = tmp_path / "oneshot.gpkg"
    geodet.detect([folder / "a.tif", folder / "b.tif"], model, oneshot, progress=False)
    got, want = detections(out), detections(oneshot)
    assert len(got) == 5
    assert got.drop(columns="geometry").equals(want.drop(columns="geometry"))
    assert all(g.equals_exact(w, 0) for g, w in zip(got.geometry, want.geometry, strict=True))
    tiles, want_tiles = (pyogrio.read_dataframe(p, layer="tiles") for p in (out, oneshot))
    assert tiles.drop(columns="geometry").equals(want_tiles.drop(columns="geometry"))
    scenes = pyogrio.read_dataframe(out, layer="geodet_scenes")
    assert scenes["scene"].tolist() == ["a.tif", "b.tif"]
    assert all(s.startswith("size ") for s in scenes["signature"])


def test_changed_scene_is_redone_and_others_kept(tmp_path, squares_model):
    folder = tmp_path / "flights"
    folder.mkdir()
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    add_scene(folder, "a.tif")
    add_scene(folder, "b.tif")
    geodet.detect(pattern, squares_model, out, incremental=True, progress=False)
    add_scene(folder, "a.tif", squares=[(60, 60)])  # a new version of a
    geodet.detect(pattern, squares_model, out, incremental=True, progress=False)
    assert runs(out)["tiles_done"].tolist() == [18, 9]
    got = detections(out)
    assert sorted(got["scene"]) == ["a.tif", "b.tif", "b.tif"]
    oneshot = tmp_path / "oneshot.gpkg"
    geodet.detect([folder / "a.tif", folder / "b.tif"], squares_model, oneshot,
                  progress=False)
    assert sorted(g.wkt for g in got.geometry) == sorted(
        g.wkt for g in detections(oneshot).geometry)
    assert (pyogrio.read_dataframe(out, layer="tiles")["scene"].value_counts() == 9).all()


def test_other_settings_or_a_plain_output_are_refused(tmp_path, squares_model):
    folder = tmp_path / "flights"
    folder.mkdir()
    add_scene(folder, "a.tif")
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    geodet.detect(pattern, squares_model, out, incremental=True, progress=False)
    add_scene(folder, "b.tif")
    before = out.read_bytes()
    with pytest.raises(InputError, match=r"made with another model or other settings "
                                         r"\(conf\): start a new output"):
        geodet.detect(pattern, squares_model, out, incremental=True, conf=0.6,
                      progress=False)
    assert out.read_bytes() == before
    plain = tmp_path / "plain.gpkg"
    geodet.detect(pattern, squares_model, plain, progress=False)
    with pytest.raises(InputError, match="not written by an incremental run"):
        geodet.detect(pattern, squares_model, plain, incremental=True, progress=False)


def test_scene_with_failed_tiles_is_done_again_next_time(tmp_path, squares_model):
    folder = tmp_path / "flights"
    folder.mkdir()
    add_scene(folder, "a.tif")
    bad = write_tif(folder / "b.tif", scene_with_squares((256, 256), [(5, 5)]), tiled=True,
                    blockxsize=128, blockysize=128, compress="deflate", interleave="band")
    corrupt_block(bad, 0, 1)
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    for _ in range(2):  # b is unchanged, but not finished: done again; a is not
        geodet.detect(pattern, squares_model, out, incremental=True, overlap=0,
                      progress=False)
    assert runs(out)[["tiles_done", "tiles_failed"]].values.tolist() == [[12, 1], [3, 1]]
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert tiles.groupby("scene")["status"].apply(list).to_dict() == {
        "a.tif": ["done"] * 9, "b.tif": ["done", "failed", "done", "done"]}


def test_scenes_over_http_are_known_by_url_and_size(tmp_path, squares_model, http_server):
    for name in SQUARES:
        add_scene(http_server.root, name)
    a, b = (f"{http_server.url}/{name}" for name in SQUARES)
    out = tmp_path / "nightly.gpkg"
    for scenes in ([a], [a, b], [b, a]):
        geodet.detect(scenes, squares_model, out, incremental=True, progress=False)
    assert runs(out)["tiles_done"].tolist() == [9, 9, 0]
    assert sorted(detections(out)["scene"]) == ["a.tif"] * 3 + ["b.tif"] * 2
    assert pyogrio.read_dataframe(out, layer="geodet_scenes")["path"].tolist() == [a, b]


def test_nightly_on_object_storage_knows_scenes_by_etag(tmp_path, request, squares_model):
    """Scenes in a bucket, the output in the bucket: a re-uploaded scene of the same
    size is a new object (another ETag) and is done again."""
    s3, env = request.getfixturevalue("s3_bucket")
    for name in SQUARES:
        s3.upload_file(str(add_scene(tmp_path, name)), BUCKET, f"flights/{name}")
    a, b = (f"/vsis3/{BUCKET}/flights/{name}" for name in SQUARES)
    out = f"s3://{BUCKET}/results/nightly.gpkg"
    (tmp_path / "v2").mkdir()
    changed = add_scene(tmp_path / "v2", "a.tif", squares=[(60, 60), (200, 200), (100, 20)])
    assert changed.stat().st_size == (tmp_path / "a.tif").stat().st_size
    for scenes, upload in (([a], None), ([a, b], None), ([a, b], changed)):
        if upload:
            s3.upload_file(str(upload), BUCKET, "flights/a.tif")
        done = detect_cli(*scenes, "--model", squares_model, "--out", out, "--incremental",
                          env=env)
        assert done.returncode == 0, done.stderr[-3000:]
    local = tmp_path / "nightly.gpkg"
    s3.download_file(BUCKET, "results/nightly.gpkg", str(local))
    assert runs(local)["tiles_done"].tolist() == [9, 9, 9]
    assert sorted(detections(local)["scene"]) == ["a.tif"] * 3 + ["b.tif"] * 2
    signatures = pyogrio.read_dataframe(local, layer="geodet_scenes")["signature"]
    assert all(s.startswith("etag ") for s in signatures)
