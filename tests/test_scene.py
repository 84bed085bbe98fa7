"""Opening scenes: georeferencing, bands, and a clear error for each bad input."""

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp

from geodet.errors import InputError
from geodet.scene import open_scene
from tests.helpers import write_plain_tif, write_tif


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
    with pytest.raises(InputError, match="no georeferencing"):
        open_scene(write_plain_tif(tmp_path / "plain.tif"))


def test_no_crs(tmp_path):
    path = write_tif(tmp_path / "nocrs.tif", np.zeros((3, 8, 8), np.uint8), crs=None)
    with pytest.raises(InputError, match="no coordinate reference system"):
        open_scene(path)


def test_band_out_of_range(tmp_path):
    path = write_tif(tmp_path / "s.tif", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"bands 1\.\.3.*\[5\]"):
        open_scene(path, bands=(1, 2, 5))
