import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from geodet.errors import InputError
from geodet.raster import TileReader, open_scene, tiles_with_data
from geodet.tiling import plan_tiles
from tests.helpers import write_tif


def test_open_scene_reads_georeferencing(tmp_path):
    path = write_tif(tmp_path / "s.tif", np.zeros((3, 20, 30), np.uint8))
    s = open_scene(path)
    assert (s.width, s.height, s.bands, s.dtype, s.has_mask) == (30, 20, (1, 2, 3), "uint8",
                                                                  False)
    assert s.transform == (0.1, 0.0, 500000.0, 0.0, -0.1, 5400000.0)


def test_alpha_band_is_not_fed_to_the_model(tmp_path):
    path = write_tif(tmp_path / "s.tif", np.full((4, 8, 8), 255, np.uint8))
    with rasterio.open(path, "r+") as ds:
        ds.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue,
                          ColorInterp.alpha]
    s = open_scene(path)
    assert s.bands == (1, 2, 3) and s.has_mask


def test_missing_scene(tmp_path):
    with pytest.raises(InputError, match="scene not found"):
        open_scene(tmp_path / "nope.tif")


def test_not_a_raster(tmp_path):
    path = tmp_path / "notes.tif"
    path.write_text("this is not an image")
    with pytest.raises(InputError, match="cannot read scene as a raster"):
        open_scene(path)


def test_no_georeferencing(tmp_path):
    path = tmp_path / "plain.tif"
    with rasterio.open(path, "w", driver="GTiff", width=8, height=8, count=3,
                       dtype="uint8") as ds:
        ds.write(np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match="no georeferencing"):
        open_scene(path)


def test_no_crs(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", np.zeros((3, 8, 8), np.uint8), crs=None)
    with pytest.raises(InputError, match="no coordinate reference system"):
        open_scene(path)


def test_band_out_of_range(tmp_path):
    path = write_tif(tmp_path / "s.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"bands 1\.\.3.*\[5\]"):
        open_scene(path, bands=(1, 2, 5))


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
    specs = plan_tiles(300, 300, (100, 100), 0.0)
    assert tiles_with_data(s, specs) == [False] * 6 + [True, False, False]


def test_band_order_for_bgr_models(tmp_path):
    data = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30)])
    s = open_scene(write_tif(tmp_path / "s.tif", data), bands=(3, 2, 1))
    [spec] = plan_tiles(8, 8, (8, 8), 0.0)
    arr, _ = TileReader([s]).read(spec, (8, 8), (8, 8))
    assert arr[:, 0, 0].tolist() == [30, 20, 10]
