"""Reading tiles: padding, masks, resampling, band order, tiles without data."""

import numpy as np

from geodet.read import TileReader, tiles_with_data
from geodet.scene import open_scene
from geodet.tiling import plan_grid, plan_tiles
from tests.helpers import write_tif


def test_reader_pads_small_rasters_and_masks_nodata(tmp_path):
    data = np.arange(3 * 10 * 20, dtype=np.uint16).reshape(3, 10, 20) + 1
    data[:, 0, 0] = 0
    path = write_tif(tmp_path / "s.tif", data, nodata=0)
    s = open_scene(path)
    [spec] = plan_tiles(s.width, s.height, (32, 32), 0.2)
    arr, scale = TileReader([s]).read(spec, (32, 32), (32, 32))
    assert arr.shape == (3, 32, 32) and arr.dtype == np.uint16 and scale == (1.0, 1.0)
    np.testing.assert_array_equal(arr[:, :10, :20], data)
    assert not arr[:, 10:, :].any() and not arr[:, :, 20:].any()


def test_reader_resamples_to_the_model_input(tmp_path):
    path = write_tif(tmp_path / "s.tif", np.full((3, 64, 64), 7, np.uint8))
    s = open_scene(path)
    spec = plan_tiles(64, 64, (32, 32), 0.0)[3]
    arr, scale = TileReader([s]).read(spec, (16, 16), (32, 32))
    assert arr.shape == (3, 16, 16) and scale == (0.5, 0.5) and (arr == 7).all()


def test_tiles_without_data_are_found_on_the_mask(tmp_path):
    data = np.zeros((3, 300, 300), np.uint8)
    data[:, 250:260, 10:12] = 99  # a small island of data in the bottom-left tile
    path = write_tif(tmp_path / "s.tif", data, nodata=0)
    s = open_scene(path)
    grid = plan_grid(300, 300, (100, 100), 0.0)
    assert tiles_with_data(s, grid).tolist() == [False] * 6 + [True, False, False]


def test_tiles_with_data_matches_each_tiles_own_pixels(tmp_path):
    # At full resolution the mask is exact: a tile has data iff one of its pixels does.
    rng = np.random.default_rng(3)
    data = np.zeros((3, 500, 700), np.uint8)
    for x, y in rng.integers(0, 690, (12, 2)):
        data[:, y % 495:y % 495 + 3, x:x + 3] = 200
    s = open_scene(write_tif(tmp_path / "s.tif", data, nodata=0))
    grid = plan_grid(700, 500, (96, 64), 0.3)
    want = [bool(data[0, t.row_off:t.row_off + t.height, t.col_off:t.col_off + t.width].any())
            for t in grid]
    assert tiles_with_data(s, grid).tolist() == want and 0 < sum(want) < len(grid)


def test_band_order_for_bgr_models(tmp_path):
    data = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30)])
    s = open_scene(write_tif(tmp_path / "s.tif", data), bands=(3, 2, 1))
    [spec] = plan_tiles(8, 8, (8, 8), 0.0)
    arr, _ = TileReader([s]).read(spec, (8, 8), (8, 8))
    assert arr[:, 0, 0].tolist() == [30, 20, 10]
