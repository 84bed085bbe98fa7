"""Reading tiles: padding, masks, resampling, band order, tiles without data."""

import numpy as np
import rasterio

from geodet.preprocess import to_model_input, unit_range
from geodet.read import TileReader, data_mask, tiles_with_data
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
    assert tile.pixels.dtype == np.uint16 and tile.scale == (1.0, 1.0)
    arr = unit_range(tile.pixels, s.value_range)
    assert arr.shape == (3, 32, 32) and arr.dtype == np.float32
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
    assert (tile.pixels == 7).all() and tile.valid is None


def test_tiles_without_data_are_found_on_the_mask(tmp_path):
    data = np.zeros((3, 300, 300), np.uint8)
    data[:, 250:260, 10:12] = 99  # a small island of data in the bottom-left tile
    path = write_tif(tmp_path / "s.tif", data, nodata=0)
    s = open_scene(path)
    grid = plan_grid(300, 300, (100, 100), 0.0)
    assert tiles_with_data(s, grid, data_mask(s)).tolist() == [False] * 6 + [True, False, False]


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
    assert tiles_with_data(s, grid, data_mask(s)).tolist() == want and 0 < sum(want) < len(grid)


def test_band_order_for_bgr_models(tmp_path):
    data = np.stack([np.full((8, 8), v, np.uint8) for v in (10, 20, 30)])
    s = open_scene(write_tif(tmp_path / "s.tif", data), bands=(3, 2, 1))
    [spec] = plan_tiles(8, 8, (8, 8), 0.0)
    pixels = TileReader([s]).read(spec, (8, 8), (8, 8)).pixels
    assert pixels[:, 0, 0].tolist() == [30, 20, 10]


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
    assert (tile.pixels == 200).all()  # the masked 10s are filled


def test_model_input_scales_each_tile_by_its_scene():
    rng = np.random.default_rng(5)
    eight = rng.integers(0, 256, (3, 4, 5), dtype=np.uint8)
    twelve = rng.integers(0, 5000, (3, 4, 5), dtype=np.uint16)  # values above 4095 clip
    ranges = [((0.0, 255.0),) * 3, ((0.0, 4095.0),) * 3]
    want = np.stack([eight.astype(np.float32) * np.float32(1 / 255),
                     np.clip(twelve.astype(np.float32) * np.float32(1 / 4095), 0, 1)])
    x = to_model_input([eight, twelve], ranges, "float32")
    assert x.dtype == np.float32 and (x == want).all()  # bit for bit: x * (1/255)
    # a reused buffer, a fixed batch padded with zeros, the model's mean and std
    buffer = np.full((4, 3, 4, 5), 9, np.float32)
    y = to_model_input([eight, twelve], ranges, "float32", mean=(0.5,) * 3, std=(0.25,) * 3,
                       batch=3, buffer=buffer)
    assert y.base is buffer and y.shape == (3, 3, 4, 5) and (y[2] == 0).all()
    assert np.allclose(y[:2], (want - 0.5) / 0.25)
    # uint8 models take 8-bit scenes as they are, and others scaled to 0..255
    u = to_model_input([eight, twelve], ranges, "uint8", channels_last=True)
    assert u.shape == (2, 4, 5, 3) and (u[0] == eight.transpose(1, 2, 0)).all()
    assert (u[1] == np.rint(want[1] * 255).transpose(1, 2, 0)).all()
    # signed data with a range that starts below zero; float data as it is
    signed = np.array([[[-100, 0, 100]]], np.int16)
    assert unit_range(signed, ((-100.0, 100.0),)).tolist() == [[[0.0, 0.5, 1.0]]]
    floats = np.array([[[-1.5, 2.5]]], np.float32)
    assert (unit_range(floats, None) == floats).all()


def test_boxes_are_clipped_to_the_data_under_them():
    from geodet.read import Tile

    valid = np.zeros((20, 20), bool)
    valid[:, :10] = True  # data on the left half, nodata on the right
    tile = Tile(np.zeros((3, 20, 20), np.uint8), valid, (1.0, 1.0))
    boxes = np.array([[6.5, 2, 14, 8], [1, 1, 5, 5], [12, 12, 18, 18], [6, 2, 14, 8]])
    upright = np.array([True, True, True, False])
    clipped = tile.clip_to_valid(boxes, upright)
    assert clipped.tolist() == [[6.5, 2, 10, 8],  # cut at the data's edge
                                [1, 1, 5, 5],  # on data only: as it was
                                [12, 12, 18, 18],  # no data under it: left to --min-valid
                                [6, 2, 14, 8]]  # oriented: not a rectangle of the grid
    assert Tile(tile.pixels, None, (1.0, 1.0)).clip_to_valid(boxes, upright) is boxes


def test_a_run_over_more_scenes_than_it_may_open_files_reads_them_all(tmp_path,
                                                                     squares_model):
    """250 scenes, in a process that may hold 160 files open: a reader keeps only its
    last scenes open, so every tile is read (each used to keep its file open: 'Too
    many open files' from the 150th or so, the rest of the tiles failed)."""
    import subprocess
    import sys

    import pyogrio

    from tests.helpers import scene_with_squares

    listing = tmp_path / "scenes.txt"
    listing.write_text("".join(
        f"{write_tif(tmp_path / f's{i:03d}.tif', scene_with_squares((96, 96), [(20, 30)]))}\n"
        for i in range(250)))
    out = tmp_path / "o.gpkg"
    program = ("import resource, sys\n"
               "_, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
               "resource.setrlimit(resource.RLIMIT_NOFILE, (160, hard))\n"
               "from geodet.cli import main\n"
               "sys.exit(main(sys.argv[1:]))\n")
    run = subprocess.run([sys.executable, "-c", program, "detect", str(listing), "--model",
                          str(squares_model), "--out", str(out), "--no-progress",
                          "--engine", "threads"], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    tiles = pyogrio.read_dataframe(out, layer="tiles")
    assert len(tiles) == 250 and set(tiles["status"]) == {"done"}, set(tiles["error"])
    assert len(pyogrio.read_dataframe(out, layer="detections")) == 250
