"""JPEG GeoTIFF blocks decoded by libjpeg-turbo (`geodet.jpeg`): the pixels GDAL gives
(bit for bit for blocks of one band; for YCbCr, but where the two libraries' colour
upsampling differs), GDAL's validity exactly, and GDAL left to decode what
libjpeg-turbo is not given."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import rasterio
import rasterio.shutil

from geodet.api import detect
from geodet.blocks import Blocks
from geodet.jpeg import TurboJpeg
from geodet.read import TileReader
from geodet.scene import open_scene
from geodet.synthetic import vehicle_scene
from geodet.tiling import plan_grid
from tests.helpers import write_tif

YCBCR = {"tiled": True, "blockxsize": 256, "blockysize": 256, "compress": "JPEG",
         "photometric": "YCBCR", "jpeg_quality": 90}


@pytest.fixture(scope="module")
def aerial(tmp_path_factory) -> np.ndarray:
    """600 x 450 px of a generated aerial scene (cars, roofs, trees): partial edge
    blocks at 256 px."""
    path = tmp_path_factory.mktemp("aerial") / "a.tif"
    vehicle_scene(path, size=600, seed=4)
    with rasterio.open(path) as ds:
        return ds.read()[:, :450]


#: Tiles of 200 px read at the scene's resolution, downsampled (by 1.5 and by 3.3),
#: upsampled.
SIZES = [(200, 200), (130, 130), (60, 60), (256, 256)]


def _tiles(scene, size: tuple[int, int] = (200, 200)):
    """Every tile of 200 px (overlap 0.25) read at ``size`` by two threads sharing
    blocks, and the same tiles read directly by GDAL."""
    grid = plan_grid(scene.width, scene.height, (200, 200), 0.25, scene=0,
                     extent=(0, 0, scene.width, scene.height))
    local, blocks = threading.local(), Blocks()

    def read(spec):
        if not hasattr(local, "reader"):
            local.reader = TileReader([scene], blocks)
        return local.reader.read(spec, size, (200, 200))

    with ThreadPoolExecutor(2) as pool:
        cut = list(pool.map(read, grid))
    direct = TileReader([scene])
    return list(zip(cut, [direct.read(spec, size, (200, 200)) for spec in grid],
                    strict=True))


def _turbo_block(path, block: tuple[int, int] = (0, 0)) -> np.ndarray | None:
    """Block ``(row, col)`` of every band as libjpeg-turbo decodes it, or None where
    GDAL is left to decode it (the dataset, or that block)."""
    with rasterio.open(path) as ds:
        decoder = TurboJpeg.open(ds)
        if decoder is None:
            return None
        try:
            return decoder.decode(*block, tuple(range(1, ds.count + 1)))
        finally:
            decoder.close()


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("extra", [{}, {"jpegtablesmode": 0}], ids=["tables", "own tables"])
@pytest.mark.parametrize("bands", [None, (3, 1)])
def test_cut_tiles_are_gdal_reads_but_for_the_colour_upsampling(tmp_path, aerial, extra,
                                                                bands, size):
    """Every tile (edge tiles, partial blocks, a band selection; the file's shared
    JPEG tables or each block's own; resampled or not) is within JPEG's tolerance of
    GDAL's read of the same window: a wrong colour order, crop, table, offset or
    resampling window is off by far more."""
    path = write_tif(tmp_path / "y.tif", aerial, **YCBCR, **extra)
    assert _turbo_block(path) is not None
    tiles = _tiles(open_scene(path, bands), size)
    assert len(tiles) > 9
    for got, want in tiles:
        assert got.pixels.dtype == want.pixels.dtype and got.pixels.shape == want.pixels.shape
        assert got.scale == want.scale
        diff = np.abs(got.pixels.astype(int) - want.pixels.astype(int))
        assert diff.mean() < 1.0 and np.percentile(diff, 99) <= 8, diff.max()


@pytest.mark.parametrize("size", SIZES)
def test_validity_comes_from_gdal_and_invalid_pixels_take_the_fill(tmp_path, aerial, size):
    """A JPEG GeoTIFF with an internal mask (a drone orthomosaic's usual form): the
    mask and the filled pixels are exactly GDAL's, resampled or not."""
    valid = np.ones(aerial.shape[1:], bool)
    valid[:, :130] = False
    valid[300:, 400:] = False
    path = tmp_path / "m.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        write_tif(path, aerial, **YCBCR)
        with rasterio.open(path, "r+") as ds:
            ds.write_mask(valid.astype(np.uint8) * 255)
    tiles = _tiles(open_scene(path), size)
    for got, want in tiles:
        assert np.array_equal(got.valid, want.valid)
        assert np.array_equal(got.pixels[:, ~got.valid], want.pixels[:, ~want.valid])
    assert any((~t.valid).any() for t, _ in tiles) and any(t.valid.all() for t, _ in tiles)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("kind", "bands"), [("grey", None), ("4 bands", None),
                                             ("4 bands", (4, 2)), ("own tables", None)])
def test_blocks_of_one_band_are_gdal_reads_bit_for_bit(tmp_path, aerial, kind, bands, size):
    """JPEG blocks of one band each (panchromatic, or multispectral bands stored
    apart): libjpeg-turbo decodes them as GDAL does, and GDAL resamples the tiles cut
    from them as it resamples a direct read, bit for bit."""
    data = aerial[:1] if kind == "grey" else np.concatenate([aerial, aerial[1:2] // 2])
    extra = {"jpegtablesmode": 0} if "own tables" in kind else {}
    path = write_tif(tmp_path / "g.tif", data, **{**YCBCR, "photometric": "MINISBLACK"},
                     interleave="band", **extra)
    assert _turbo_block(path) is not None
    for got, want in _tiles(open_scene(path, bands), size):
        assert np.array_equal(got.pixels, want.pixels) and got.scale == want.scale


@pytest.mark.parametrize("kind", ["rgb jpeg", "nodata value", "deflate", "vrt"])
def test_rasters_libjpeg_turbo_is_not_given_are_gdal_reads_bit_for_bit(tmp_path, aerial,
                                                                      kind):
    """Among them a YCbCr JPEG with a nodata value, whose validity GDAL computes from
    the pixels it decodes: it decodes them once, for both."""
    profile = {"rgb jpeg": {**YCBCR, "photometric": "RGB"},
               "nodata value": {**YCBCR, "nodata": 0},
               "deflate": {**YCBCR, "compress": "DEFLATE", "photometric": "RGB"},
               "vrt": YCBCR}[kind]
    path = write_tif(tmp_path / "s.tif", aerial, **profile)
    if kind == "vrt":  # a YCbCr JPEG GeoTIFF behind a VRT, in 512 px blocks
        path = tmp_path / "s.vrt"
        rasterio.shutil.copy(tmp_path / "s.tif", path, driver="VRT", blockxsize=512,
                             blockysize=512)
    assert _turbo_block(path) is None
    for got, want in _tiles(open_scene(path)):
        assert np.array_equal(got.pixels, want.pixels)
        assert (got.valid is None) == (want.valid is None) == (kind != "nodata value")
        assert got.valid is None or np.array_equal(got.valid, want.valid)


def test_a_dataset_that_is_no_file_is_left_to_gdal(tmp_path, aerial):
    path = f"/vsimem/{tmp_path.name}.tif"
    rasterio.shutil.copy(write_tif(tmp_path / "y.tif", aerial, **YCBCR), path, **YCBCR)
    try:
        assert _turbo_block(tmp_path / "y.tif") is not None
        assert _turbo_block(path) is None
    finally:
        rasterio.shutil.delete(path)


def test_sparse_corrupt_and_missing_blocks_are_left_to_gdal(tmp_path, aerial):
    """A block that is not in the file reads as GDAL reads it (the fill); a garbled
    one, which libjpeg-turbo refuses, as GDAL decodes it (with its warning); one cut
    off by a truncated file fails with GDAL's own words, as a direct read does. The
    other tiles are read."""
    data = aerial.copy()
    data[:, :256, :256] = 0  # all zeros: with SPARSE_OK, not written at all
    path = write_tif(tmp_path / "p.tif", data, sparse_ok=True, **YCBCR)
    with rasterio.open(path) as ds:
        assert ds.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=1) in (None, "", "0")
        garbled, last = (int(ds.get_tag_item(f"BLOCK_OFFSET_{c}_{r}", "TIFF", bidx=1))
                         for c, r in ((1, 0), (2, 1)))
    with open(path, "r+b") as f:
        f.seek(garbled + 700)
        f.write(bytes(range(256)) * 8)
        f.truncate(last + 100)
    assert _turbo_block(path, (1, 1)) is not None  # a sparse first block is no matter
    scene = open_scene(path)
    grid = plan_grid(scene.width, scene.height, (200, 200), 0.25, scene=0,
                     extent=(0, 0, scene.width, scene.height))
    shared, direct = TileReader([scene], Blocks()), TileReader([scene])
    failed = 0
    for spec in grid:
        got, why = shared.try_read(spec, (200, 200), (200, 200))
        want, reason = direct.try_read(spec, (200, 200), (200, 200))
        assert (got is None) == (want is None), spec
        if got is None:
            failed += 1
            assert "got 100 bytes" in why and "got 100 bytes" in reason  # GDAL's words
        elif spec.row_off + spec.height <= 256 and spec.col_off + spec.width <= 512:
            assert np.array_equal(got.pixels, want.pixels)  # sparse and garbled blocks
    assert 0 < failed < len(grid)


def test_a_run_over_a_jpeg_scene_finds_what_gdal_decoding_finds(tmp_path):
    """The bundled demo detector over a generated scene stored as YCbCr JPEG in 512 px
    blocks, decoded by libjpeg-turbo, and over a VRT of the same file, which GDAL
    decodes: the same objects, one to one, the same classes, boxes within two pixels
    (a tenth of a pixel for most)."""
    from geodet.demo import bundled_model

    path = tmp_path / "v.tif"
    truth, _ = vehicle_scene(path, size=1536, seed=2)
    with rasterio.open(path) as ds:
        data, profile = ds.read(), ds.profile
    jpeg = write_tif(tmp_path / "j.tif", data, transform=profile["transform"],
                     crs=profile["crs"], **{**YCBCR, "blockxsize": 512, "blockysize": 512})
    vrt = tmp_path / "j.vrt"
    rasterio.shutil.copy(jpeg, vrt, driver="VRT")
    assert _turbo_block(jpeg) is not None and _turbo_block(vrt) is None
    turbo, gdal = (detect(p, bundled_model(), progress=False) for p in (jpeg, vrt))
    assert len(truth) > 40 and len(turbo) == len(gdal) >= 0.95 * len(truth)
    a = np.array([g.bounds for g in turbo.geometry])
    b = np.array([g.bounds for g in gdal.geometry])
    nearest = np.abs(a[:, None, :] - b[None, :, :]).max(axis=2).argmin(axis=1)
    assert len(set(nearest)) == len(a)  # one to one
    gsd = abs(profile["transform"].a)
    shift = np.abs(a - b[nearest]) / gsd  # pixels
    assert np.median(shift) < 0.1 and shift.max() <= 2, (np.median(shift), shift.max())
    assert (turbo["class_name"].to_numpy() == gdal["class_name"].to_numpy()[nearest]).all()
