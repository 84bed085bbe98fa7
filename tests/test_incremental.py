"""Incremental runs over a growing folder: only new or changed scenes are processed."""

from __future__ import annotations

import os

import pyogrio
import pytest
import shapely
from rasterio.transform import from_origin

import geodet
from geodet.cli import main
from geodet.errors import InputError
from tests.helpers import GSD, ORIGIN, corrupt_block, run_error, scene_with_squares, write_tif
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


# --mosaic: one survey cut into files 300 px wide, side by side; squares (top-left
# corners in the survey's pixels) away from the borders, near them, and across them
# (x = 294 and x = 596 straddle the a|b and b|c borders).
SURVEY = [(20, 30), (150, 160), (250, 200), (294, 100), (420, 40), (560, 250), (596, 150),
          (700, 60), (850, 220)]
FILES = {"a.tif": 0, "b.tif": 300, "c.tif": 600}


def add_file(folder, name, squares=SURVEY, crs="EPSG:32633"):
    """One 300 x 300 px file of the survey: its columns from ``FILES[name]`` on."""
    x = FILES[name]
    whole = scene_with_squares((300, 900), squares)
    return write_tif(folder / name, whole[:, :, x:x + 300].copy(), crs=crs,
                     transform=from_origin(ORIGIN[0] + x * GSD, ORIGIN[1], GSD, GSD))


def mosaic_run(pattern, model, out, **options):
    return geodet.detect(pattern, model, out, mosaic=True, incremental=True,
                         progress=False, **options)


def matched(got, want) -> bool:
    """One-to-one: each box of ``want`` has a box of ``got`` of its class, IoU > 0.9."""
    if len(got) != len(want):
        return False
    left = list(range(len(got)))
    for geom, cls in zip(want.geometry, want["class_id"], strict=True):
        ious = [(geom.intersection(got.geometry[k]).area / geom.union(got.geometry[k]).area,
                 k) for k in left if got["class_id"][k] == cls]
        best = max(ious, default=(0, None))
        if best[0] <= 0.9:
            return False
        left.remove(best[1])
    return True


def square(x, y, k=12):
    return shapely.box(ORIGIN[0] + x * GSD, ORIGIN[1] - (y + k) * GSD,
                       ORIGIN[0] + (x + k) * GSD, ORIGIN[1] - y * GSD)


def found_whole(frame, x, y) -> list[float]:
    """The IoU with the square at ``(x, y)`` of every detection that meets it."""
    truth = square(x, y)
    return [g.intersection(truth).area / g.union(truth).area for g in frame.geometry
            if g.intersects(truth)]


@pytest.mark.parametrize("first", ["a.tif", "c.tif"])
def test_mosaic_grows_file_by_file(tmp_path, capsys, squares_model, first):
    """a, then b (east of a, or west of c: the mosaic's origin moves), then nothing new:
    each run does only the tiles over its new file, the squares across the borders
    are found once and whole, and the output is the one-shot mosaic's."""
    folder = tmp_path / "survey"
    folder.mkdir()
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    add_file(folder, first)
    mosaic_run(pattern, squares_model, out)
    before = detections(out)
    add_file(folder, "b.tif")
    mosaic_run(pattern, squares_model, out)
    assert main(["detect", pattern, "--model", str(squares_model), "--out", str(out),
                 "--mosaic", "--incremental", "--no-progress"]) == 0
    assert "0 detections in 0 tiles" in capsys.readouterr().out

    # 128 px tiles, 26 px overlap: 3 x 3 over one file; over two, columns start at
    # 0, 102, 204, 306, 408, 472, and b's file (or a's, west of b) meets 4 (or 3).
    assert runs(out)["tiles_done"].tolist() == [9, 12 if first == "a.tif" else 9, 0]
    oneshot = tmp_path / "oneshot.gpkg"
    geodet.detect(pattern, squares_model, oneshot, mosaic=True, progress=False)
    got, want = detections(out), detections(oneshot)
    assert len(want) == 6 and matched(got, want)
    border = (294, 100) if first == "a.tif" else (596, 150)
    assert len(found_whole(got, *border)) == 1 and found_whole(got, *border)[0] > 0.8
    # Away from the border the first night's detections are kept as they were.
    far = square(20, 30) if first == "a.tif" else square(850, 220)
    old = before[before.intersects(far)].geometry.iloc[0]
    assert any(g.equals_exact(old, 0) for g in got.geometry)
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert not tiles.duplicated(["scene", "tile_id"]).any()
    assert set(got["tile_id"]) <= set(tiles["tile_id"]) and set(got["scene"]) == {"mosaic"}
    assert tiles.union_all().covers(want.union_all())
    scenes = pyogrio.read_dataframe(out, layer="geodet_scenes")
    assert sorted(os.path.basename(p) for p in scenes["path"]) == sorted({first, "b.tif"})
    assert scenes["signature"].str.startswith("size ").all()


def test_changed_mosaic_file_is_redone(tmp_path, squares_model):
    folder = tmp_path / "survey"
    folder.mkdir()
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    add_file(folder, "a.tif")
    add_file(folder, "b.tif")
    mosaic_run(pattern, squares_model, out)
    before = detections(out)
    # b again: the square across the a|b border kept, its others gone, a new one
    add_file(folder, "b.tif", squares=[(294, 100), (480, 120)])
    mosaic_run(pattern, squares_model, out)
    assert runs(out)["tiles_done"].tolist() == [18, 12]
    oneshot = tmp_path / "oneshot.gpkg"
    geodet.detect(pattern, squares_model, oneshot, mosaic=True, progress=False)
    got = detections(out)
    assert len(before) == 6 and len(got) == 5 and matched(got, detections(oneshot))
    assert found_whole(before, 420, 40) and found_whole(before, 560, 250)
    assert found_whole(got, 420, 40) == found_whole(got, 560, 250) == []
    assert len(found_whole(got, 294, 100)) == 1 and found_whole(got, 480, 120)[0] > 0.8
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert not tiles.duplicated(["scene", "tile_id"]).any()
    assert (tiles["status"] == "done").all() and len(tiles) >= 18
    scenes = pyogrio.read_dataframe(out, layer="geodet_scenes")
    assert len(scenes) == 2 and scenes["signature"].notna().all()


def test_mosaic_file_that_does_not_fit_the_output_is_refused(tmp_path, capsys,
                                                              squares_model):
    folder = tmp_path / "survey"
    folder.mkdir()
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    add_file(folder, "a.tif")
    mosaic_run(pattern, squares_model, out)
    before = out.read_bytes()
    add_file(folder, "b.tif", crs="EPSG:32632")
    args = ["detect", pattern, "--model", squares_model, "--out", out, "--mosaic",
            "--incremental", "--no-progress"]
    assert "mosaic files disagree (CRS" in run_error(capsys, args)
    (folder / "a.tif").unlink()  # the output still holds a, in EPSG:32633
    assert "the output's mosaic is in EPSG:32633" in run_error(capsys, args)
    assert out.read_bytes() == before
    with pytest.raises(InputError, match=r"other settings \(mosaic\)"):
        geodet.detect(pattern, squares_model, out, incremental=True, progress=False)


def test_mosaic_file_under_a_failed_tile_is_done_again(tmp_path, squares_model):
    """A block of b is corrupt: the tiles over it fail, b keeps no signature, and the
    next nights redo the tiles over b (a's stay as they are) until b reads whole."""
    folder = tmp_path / "survey"
    folder.mkdir()
    out, pattern = tmp_path / "nightly.gpkg", str(folder / "*.tif")
    add_file(folder, "a.tif")
    whole = scene_with_squares((300, 900), SURVEY)
    bad = write_tif(folder / "b.tif", whole[:, :, 300:600].copy(), tiled=True,
                    blockxsize=128, blockysize=128, compress="deflate", interleave="band",
                    transform=from_origin(ORIGIN[0] + 300 * GSD, ORIGIN[1], GSD, GSD))
    corrupt_block(bad, 1, 2)  # b's pixels 256-299 x 128-255: only tiles inside b
    for _ in range(2):
        mosaic_run(pattern, squares_model, out)
        signed = pyogrio.read_dataframe(out, layer="geodet_scenes").set_index("path")
        assert signed["signature"].notna().to_dict() == {
            str(folder / "a.tif"): True, str(folder / "b.tif"): False}
    done = runs(out)[["tiles_done", "tiles_failed"]].values.tolist()
    assert done[0][1] > 0 and done[1][1] == done[0][1]  # the same tiles fail again
    assert sum(done[0]) == 18 and sum(done[1]) == 12  # night 2: only the tiles over b
    add_file(folder, "b.tif")  # b whole again
    mosaic_run(pattern, squares_model, out)
    assert runs(out)[["tiles_done", "tiles_failed"]].values.tolist()[-1] == [12, 0]
    assert pyogrio.read_dataframe(out, layer="geodet_scenes")["signature"].notna().all()
    oneshot = tmp_path / "oneshot.gpkg"
    geodet.detect(pattern, squares_model, oneshot, mosaic=True, progress=False)
    assert matched(detections(out), detections(oneshot))
