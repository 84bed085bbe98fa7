"""`geodet report` on a real run: two generated aerial scenes through the bundled
detector, one of them with overviews and a corrupt block (so some tiles fail)."""

from __future__ import annotations

import json
import logging
import shutil

import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.features import rasterize

import geodet
from geodet.cli import main
from geodet.demo import bundled_model
from geodet.report import FAILED_TINT, PANEL_GAP, _mosaic, draw_quicklook, summarise
from geodet.styles import FAILED_RGB, class_colours
from geodet.synthetic import vehicle_scene, write_truth
from tests.helpers import corrupt_block, pixel_boxes, run_error

pytestmark = [pytest.mark.usefixtures("ray_local"),
              pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(output, scene a without overviews, scene b with overviews and a corrupt block)."""
    folder = tmp_path_factory.mktemp("report")
    a, b = folder / "a.tif", folder / "b.tif"
    vehicle_scene(a, size=768, seed=7)  # 85 cars and trucks
    vehicle_scene(b, size=1536, seed=5)
    with rasterio.open(b, "r+") as ds:
        ds.build_overviews([2, 4], Resampling.average)
    corrupt_block(b, 1, 1)  # full resolution only: the overviews stay readable
    out = folder / "out.gpkg"
    geodet.detect([a, b], bundled_model(), out, progress=False)
    return out, a, b


def layers(out, base: str) -> pd.DataFrame:
    names = [n for n, _ in pyogrio.list_layers(out) if n.startswith(base)]
    return pd.concat([pyogrio.read_dataframe(out, layer=n) for n in names], ignore_index=True)


def test_numbers_match_the_layers(run):
    out, _, _ = run
    summary = summarise(out)
    dets, tiles = layers(out, "detections"), layers(out, "tiles")
    [r] = summary["runs"]
    assert r["providers"] == ["CPUExecutionProvider"] and r["model"] == bundled_model()
    assert r["tiles"] == {"total": len(tiles), **tiles["status"].value_counts().to_dict(),
                          "empty": 0}
    assert r["tiles"]["failed"] > 0 and r["detections"] == len(dets)
    assert r["seconds"]["total"] > 0

    assert [s["scene"] for s in summary["scenes"]] == ["a.tif", "b.tif"]
    got = {(s["scene"], c): v for s in summary["scenes"] for c, v in s["classes"].items()}
    want = dets.groupby(["scene", "class_name"])["score"]
    assert set(got) == set(want.groups) and {c for _, c in got} == {"car", "truck"}
    for key, scores in want:
        assert got[key] == pytest.approx({
            "count": len(scores), "score_min": scores.min(), "score_median": scores.median(),
            "score_mean": scores.mean(), "score_max": scores.max()})

    failed = tiles[tiles["status"] == "failed"].sort_values("tile_id")
    assert [(t["scene"], t["tile_id"], t["error"]) for t in summary["failed_tiles"]] == list(
        zip(failed["scene"], failed["tile_id"], failed["error"], strict=True))
    assert set(failed["scene"]) == {"b.tif"}





def test_quicklook_shows_the_boxes_where_they_are(run, tmp_path):
    out, a, b = run
    png = tmp_path / "look.png"
    drawn = draw_quicklook(out, png, max_side=768)
    assert [(d["scene"], d["size"], d["scale"], d["at"]) for d in drawn] == [
        ("a.tif", [768, 768], 1.0, [0, 0]), ("b.tif", [768, 768], 2.0, [768 + PANEL_GAP, 0])]
    with rasterio.open(png) as ds:
        picture = ds.read()
    assert picture.shape == (3, 768, 768 + PANEL_GAP + 768)
    colours = class_colours(["car", "truck"])

    # Scene a, drawn 1:1: every box's left edge in its class's colour, pixels away
    # from the boxes exactly the scene's.
    panel = picture[:, :, :768]
    dets = pyogrio.read_dataframe(out, layer="detections", where="scene = 'a.tif'")
    with rasterio.open(a) as ds:
        scene, transform = ds.read(), ds.transform
    boxes = pixel_boxes(dets, transform)
    on_edge = [tuple(panel[:, (r0 + r1) // 2, c0]) == colours[cls]
               for (c0, r0, c1, r1), cls in zip(boxes, dets["class_name"], strict=True)]
    assert len(on_edge) > 20 and np.mean(on_edge) > 0.95
    near = rasterize(shapely.buffer(dets.geometry.values, 0.4), out_shape=(768, 768),
                     transform=transform, all_touched=True) > 0
    assert (~near).mean() > 0.5 and np.array_equal(panel[:, ~near], scene[:, ~near])

    # Scene b, drawn at half size from its overview (its full resolution has a corrupt
    # block): failed tiles tinted red.
    panel = picture[:, :, 768 + PANEL_GAP:]
    with rasterio.open(b, overview_level=0) as ds:
        overview, transform = ds.read().astype(float), ds.transform
    tiles = pyogrio.read_dataframe(out, layer="tiles", where="status = 'failed'")
    red = np.array(FAILED_RGB, float)
    for c0, r0, c1, r1 in pixel_boxes(tiles, transform):
        row, col = (r0 + r1) // 2, (c0 + c1) // 2
        expected = overview[:, row, col] * (1 - FAILED_TINT) + red * FAILED_TINT
        assert np.abs(panel[:, row, col] - expected).max() <= 1
        edge = panel[:, r0:r1, c0].T  # the tile's left outline, under any detections
        assert np.mean([tuple(p) == FAILED_RGB for p in edge]) > 0.8


def test_quicklook_size_and_scenes_without_overviews(run, tmp_path, caplog):
    out, _, _ = run
    png = tmp_path / "small.png"
    with caplog.at_level(logging.WARNING, logger="geodet"):
        drawn = draw_quicklook(out, png, max_side=128)
    assert [d["size"] for d in drawn] == [[128, 128], [128, 128]]
    with rasterio.open(png) as ds:
        assert (ds.width, ds.height) == (128 + PANEL_GAP + 128, 128)
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and "a.tif has no overviews" in warned[0]


def test_many_scenes_are_laid_out_in_a_grid():
    panels = [np.full((3, 10 + i, 20), i, np.uint8) for i in range(5)]
    picture, corners = _mosaic(panels)
    cell_w, cell_h = 20 + PANEL_GAP, 14 + PANEL_GAP
    assert corners == [[0, 0], [cell_w, 0], [2 * cell_w, 0], [0, cell_h], [cell_w, cell_h]]
    assert picture.shape == (3, 2 * cell_h - PANEL_GAP, 3 * cell_w - PANEL_GAP)
    for i, (x, y) in enumerate(corners):
        assert (picture[:, y:y + 10 + i, x:x + 20] == i).all()
    assert (picture[:, cell_h:, 2 * cell_w:] == 255).all()  # no sixth scene


def test_cli_text_json_and_png(run, tmp_path, capsys):
    out, _, _ = run
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    summary = summarise(out)
    assert f"failed tiles: {len(summary['failed_tiles'])}" in text
    assert summary["failed_tiles"][0]["error"] in text
    assert "CPUExecutionProvider" in text and "truck" in text

    png = tmp_path / "q.png"
    assert main(["report", str(out), "--json", "--png", str(png), "--size", "64"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["scenes"] == summary["scenes"] and printed["quicklook"]["png"] == str(png)
    assert png.stat().st_size > 0 and [p.name for p in tmp_path.iterdir()] == ["q.png"]


def test_errors_are_one_line(run, tmp_path, capsys, readonly_dir):
    out, a, _ = run
    assert "file not found" in run_error(capsys, ["report", tmp_path / "nope.gpkg"])
    truth = tmp_path / "truth.gpkg"
    write_truth(truth, np.array([[0, 0, 10, 10]]), a)
    assert "is not a geodet output" in run_error(capsys, ["report", truth])
    junk = tmp_path / "junk.gpkg"
    junk.write_bytes(b"not a database" * 10)
    assert "cannot read" in run_error(capsys, ["report", junk])
    assert "quick-look directory is not writable" in run_error(
        capsys, ["report", out, "--png", readonly_dir / "q.png"])
    assert "does not exist" in run_error(
        capsys, ["report", out, "--png", tmp_path / "missing" / "q.png"])
    assert ".png" in run_error(capsys, ["report", out, "--png", tmp_path / "q.jpg"])
    assert "at least 16" in run_error(
        capsys, ["report", out, "--png", tmp_path / "q.png", "--size", "8"])
    moved = tmp_path / "moved.gpkg"
    shutil.copy(out, moved)
    a.rename(a.with_suffix(".gone"))
    try:
        assert "cannot open the scene" in run_error(
            capsys, ["report", moved, "--png", tmp_path / "q.png"])
    finally:
        a.with_suffix(".gone").rename(a)
