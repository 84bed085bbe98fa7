import geopandas as gpd
import numpy as np
import pytest
import shapely

from geodet.cli import main
from geodet.evaluate import crosses_seam, evaluate, evaluate_files


def frame(boxes, classes, scores=None):
    data = {"class_name": classes}
    if scores is not None:
        data["score"] = scores
    return gpd.GeoDataFrame(data, geometry=[shapely.box(*b) for b in boxes], crs=3857)


TRUTH = frame([(0, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10)], ["car", "car", "truck"])


def test_precision_recall_duplicates_per_class():
    dets = frame([(0, 0, 10, 10), (1, 0, 10, 10), (20, 0, 30, 10), (40, 0, 50, 10),
                  (80, 80, 90, 90)], ["car", "car", "car", "car", "truck"],
                 [0.9, 0.8, 0.7, 0.6, 0.5])
    r = evaluate(dets, TRUTH)
    assert (r["car"]["tp"], r["car"]["fp"], r["car"]["fn"]) == (2, 2, 0)
    assert r["car"]["duplicate_rate"] == pytest.approx(1 / 4)  # (1,0,10,10) re-finds car 1
    assert (r["truck"]["tp"], r["truck"]["fp"], r["truck"]["fn"]) == (0, 1, 1)
    assert r["all"]["precision"] == pytest.approx(2 / 5)
    assert r["all"]["recall"] == pytest.approx(2 / 3)
    assert r["all"]["duplicate_rate"] == pytest.approx(1 / 5)


def test_seam_recall():
    tiles = frame([(0, 0, 25, 60), (15, 0, 60, 60)], ["t", "t"])
    # Object 2 (20..30) crosses the first tile's edge at x = 25; none crosses the outline.
    assert crosses_seam(TRUTH.geometry, tiles.geometry).tolist() == [False, True, False]
    dets = frame([(0, 0, 10, 10), (40, 0, 50, 10)], ["car", "truck"], [0.9, 0.9])
    r = evaluate(dets, TRUTH, tiles=tiles)["all"]
    assert (r["recall_seam"], r["recall_rest"]) == (0.0, 1.0)


def test_evaluate_files_and_cli(tmp_path, capsys):
    det_path, truth_path = tmp_path / "d.gpkg", tmp_path / "t.gpkg"
    frame([(0, 0, 10, 10)], ["car"], [0.9]).to_file(det_path, layer="detections")
    TRUTH.to_file(truth_path, layer="truth")
    r = evaluate_files(str(det_path), str(truth_path))
    assert r["all"]["tp"] == 1 and np.isclose(r["all"]["recall"], 1 / 3)
    assert main(["eval", str(det_path), str(truth_path)]) == 0
    out = capsys.readouterr().out
    assert "precision" in out and "truck" in out


@pytest.mark.parametrize("args,needle", [
    (["missing.gpkg", "{truth}"], "file not found"),
    (["{truth}", "{truth}"], "no layer 'detections'"),
    (["{det}", "{truth}", "--iou", "2"], "--iou must be in"),
    (["{det}", "{truth}", "--truth-layer", "nope"], "no layer 'nope'"),
])
def test_eval_bad_input(tmp_path, capsys, args, needle):
    det_path, truth_path = tmp_path / "d.gpkg", tmp_path / "t.gpkg"
    frame([(0, 0, 10, 10)], ["car"], [0.9]).to_file(det_path, layer="detections")
    TRUTH.to_file(truth_path, layer="truth")
    args = [a.format(det=det_path, truth=truth_path) for a in args]
    assert main(["eval", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
