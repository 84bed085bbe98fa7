"""--mosaic: files cut from one scene give the scene's detections, found once; files
that do not fit together are refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rasterio.windows import Window

import geodet
from geodet.errors import InputError
from geodet.mosaic import build_vrt
from geodet.scene import open_scene
from tests.helpers import GSD, ORIGIN, pixel_boxes, scene_with_squares, write_tif

# Squares on and across the cut lines (x = 150, y = 130) and elsewhere.
SQUARES = [(144, 20), (20, 125), (145, 124), (60, 60), (200, 200), (250, 40)]


def cut(path, into, nodata=None) -> list[str]:
    """Cut a scene into 4 files along x = 150 and y = 130."""
    parts = []
    with rasterio.open(path) as ds:
        for row, (r0, r1) in enumerate(((0, 130), (130, ds.height))):
            for col, (c0, c1) in enumerate(((0, 150), (150, ds.width))):
                window = Window(c0, r0, c1 - c0, r1 - r0)
                data = ds.read(window=window)
                parts.append(str(write_tif(into / f"part{row}{col}.tif", data,
                                           transform=ds.window_transform(window),
                                           nodata=nodata)))
    return parts


def boxes(result) -> list[list[int]]:
    return sorted(pixel_boxes(result, from_origin(*ORIGIN, GSD, GSD)).tolist())


@pytest.mark.usefixtures("ray_local")
def test_four_files_as_one_scene_give_the_scene_s_detections(tmp_path, squares_model):
    whole = write_tif(tmp_path / "whole.tif", scene_with_squares((280, 320), SQUARES))
    parts = cut(whole, tmp_path)
    expected = geodet.detect(whole, squares_model, progress=False)
    assert len(expected) == len(SQUARES)
    mosaic = geodet.detect(parts, squares_model, mosaic=True, progress=False)
    assert boxes(mosaic) == boxes(expected) and set(mosaic["scene"]) == {"mosaic"}
    separately = geodet.detect(parts, squares_model, progress=False)
    assert boxes(separately) != boxes(expected)  # cut squares: missed or in pieces


def test_the_vrt_is_the_scene_pixel_for_pixel(tmp_path):
    data = scene_with_squares((280, 320), SQUARES)
    data[:, :10, :] = 0
    whole = write_tif(tmp_path / "whole.tif", data, nodata=0)
    vrt = open_scene(build_vrt(cut(whole, tmp_path, nodata=0)))
    with rasterio.open(vrt.path) as ds, rasterio.open(whole) as ref:
        assert ds.transform == ref.transform and ds.crs == ref.crs
        assert (ds.read() == ref.read()).all()
        assert (ds.dataset_mask() == ref.dataset_mask()).all()


def test_files_that_disagree_are_refused(tmp_path):
    a = write_tif(tmp_path / "a.tif", np.zeros((3, 20, 20), np.uint8))
    right = from_origin(ORIGIN[0] + 20 * GSD, ORIGIN[1], GSD, GSD)
    cases = {
        "CRS": write_tif(tmp_path / "crs.tif", np.zeros((3, 20, 20), np.uint8),
                         transform=right, crs="EPSG:32632"),
        "resolution": write_tif(tmp_path / "res.tif", np.zeros((3, 20, 20), np.uint8),
                                transform=from_origin(*ORIGIN, 0.2, 0.2)),
        "1 bands": write_tif(tmp_path / "bands.tif", np.zeros((1, 20, 20), np.uint8),
                             transform=right),
        "data types": write_tif(tmp_path / "dtype.tif", np.zeros((3, 20, 20), np.uint16),
                                transform=right),
        "pixel grid": write_tif(tmp_path / "grid.tif", np.zeros((3, 20, 20), np.uint8),
                                transform=from_origin(ORIGIN[0] + 0.05, ORIGIN[1], GSD,
                                                      GSD)),
    }
    for what, other in cases.items():
        with pytest.raises(InputError, match=what):
            build_vrt([str(a), str(other)])
