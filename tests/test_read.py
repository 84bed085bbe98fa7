"""Reading tiles: padding, masks, resampling, band order, tiles without data."""

import numpy as np
import rasterio

from geodet.read import TileReader, tiles_with_data
from geodet.scene import open_scene
from geodet.tiling import plan_grid, plan_tiles
from tests.helpers import write_tif


def test_reader_pads_small_rasters_and_fills_nodata(tmp_path):
    data = np.arange(3 * 10 * 20, dtype=np.uint16).reshape(3, 10, 20) + 1
    data[:, 0, 0] = 0
    path = write_tif(tmp_path / "s.tif", data, nodata=0)
    s = open_scene(path, scale=(0, 1000))
    [spec] = plan_tiles(s.width, s.height, (32, 32), 0.2)
    tile = TileReader([s]).read(spec, (32, 32), (32, 32))
    arr = tile.pixels
    assert arr.shape == (3, 32, 32) and arr.dtype == np.float32 and tile.scale == (1.0, 1.0)
    expected = data / np.float32(1000)
    np.testing.assert_allclose(arr[:, 1:10, :20], expected[:, 1:, :], rtol=1e-6)
    # nodata and padding: the scene's mean valid value, marked invalid
    fill = np.array(s.fill, np.float32).astype(np.uint16) / np.float32(1000)
    np.testing.assert_allclose(arr[:, 0, 0], fill, rtol=1e-6)
    np.testing.assert_allclose(arr[:, 20:, 25], np.repeat(fill[:, None], 12, 1), rtol=1e-6)
    assert tile.valid[1:10, :20].all() and not tile.valid[0, 0]
    assert not tile.valid[10:, :].any() and not tile.valid[:, 20:].any()
    assert tile.valid_fraction(np.array([[0, 0, 20, 10], [10, 5, 30, 15], [20, 20, 30, 30]])
                               ).tolist() == [199 / 200, 0.25, 0.0]


def test_reader_resamples_to_the_model_input(tmp_path):
    path = write_tif(tmp_path / "s.tif", np.full((3, 64, 64), 7, np.uint8))
    s = open_scene(path)
    spec = plan_tiles(64, 64, (32, 32), 0.0)[3]
    tile = TileReader([s]).read(spec, (16, 16), (32, 32))
    assert tile.pixels.shape == (3, 16, 16) and tile.scale == (0.5, 0.5)
    assert np.allclose(tile.pixels, 7 / 255, rtol=1e-6) and tile.valid is None


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
    pixels = TileReader([s]).read(spec, (8, 8), (8, 8)).pixels
    assert (pixels[:, 0, 0] * 255).round().tolist() == [30, 20, 10]


def test_an_internal_mask_marks_pixels_invalid(tmp_path):
    data = np.full((3, 16, 16), 200, np.uint8)
    data[:, :, 8:] = 10
    path = write_tif(tmp_path / "s.tif", data)
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "r+") as ds:
        mask = np.full((16, 16), 255, np.uint8)
        mask[:, 8:] = 0
        ds.write_mask(mask)
    s = open_scene(path)
    assert s.has_mask and s.fill == (200.0,) * 3
    [spec] = plan_tiles(16, 16, (16, 16), 0.0)
    tile = TileReader([s]).read(spec, (16, 16), (16, 16))
    assert tile.valid[:, :8].all() and not tile.valid[:, 8:].any()
    assert np.allclose(tile.pixels, 200 / 255, rtol=1e-6)  # the masked 10s are filled
