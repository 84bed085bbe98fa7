"""Feeding the model: tiles cut from blocks decoded once for all reader threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from geodet.blocks import Block, Blocks
from geodet.read import TileReader
from geodet.scene import open_scene
from geodet.tiling import plan_grid
from tests.helpers import write_tif


def _scene(tmp_path, kind: str):
    """A tiled GeoTIFF of 600 x 450 px (edge blocks are partial) in 256 px blocks."""
    rng = np.random.default_rng(3)
    tiled = {"tiled": True, "blockxsize": 256, "blockysize": 256}
    if kind == "jpeg":
        data = rng.integers(0, 256, (3, 450, 600), dtype=np.uint8)
        return write_tif(tmp_path / "j.tif", data, compress="JPEG", photometric="YCBCR",
                         **tiled), None
    if kind == "uint16 nodata":
        data = rng.integers(1, 4096, (3, 450, 600), dtype=np.uint16)
        data[:, 100:300, 50:400] = 0
        return write_tif(tmp_path / "n.tif", data, nodata=0, compress="DEFLATE",
                         **tiled), None
    if kind == "alpha":
        data = rng.integers(0, 256, (4, 450, 600), dtype=np.uint8)
        data[3] = np.where(rng.random((450, 600)) < 0.3, 0, 255)
        return write_tif(tmp_path / "a.tif", data, photometric="RGB", alpha="YES",
                         **tiled), None
    if kind == "bands 3,1":
        data = rng.integers(0, 256, (3, 450, 600), dtype=np.uint8)
        return write_tif(tmp_path / "b.tif", data, **tiled), (3, 1)
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["jpeg", "uint16 nodata", "alpha", "bands 3,1"])
def test_tiles_cut_from_shared_blocks_are_direct_reads_bit_for_bit(tmp_path, kind):
    """Every tile of a grid with overlap (edge tiles and partial blocks included),
    read by two threads sharing one `Blocks`, equals a direct windowed read: pixels,
    type, validity and fill. Resampled tiles, which are read directly, too."""
    path, bands = _scene(tmp_path, kind)
    scene = open_scene(path, bands)
    for tile, size in (((200, 200), (200, 200)), ((200, 200), (160, 160))):
        grid = plan_grid(scene.width, scene.height, tile, 0.25, scene=0,
                         extent=(0, 0, scene.width, scene.height))
        specs = list(grid)
        blocks, local = Blocks(), threading.local()

        def cut(spec, blocks=blocks, local=local, size=size, tile=tile):
            if not hasattr(local, "reader"):
                local.reader = TileReader([scene], blocks)
            return local.reader.read(spec, size, tile)

        with ThreadPoolExecutor(2) as pool:
            shared = list(pool.map(cut, specs))
        direct = TileReader([scene])
        assert len(specs) > 9
        for spec, got in zip(specs, shared, strict=True):
            want = direct.read(spec, size, tile)
            assert got.pixels.dtype == want.pixels.dtype
            assert np.array_equal(got.pixels, want.pixels), spec
            assert (got.valid is None) == (want.valid is None)
            assert got.valid is None or np.array_equal(got.valid, want.valid)
            assert got.scale == want.scale
        held = len(blocks._done)
        assert held == (0 if size != tile else 3 * 2)  # 600 x 450 px: 3 x 2 blocks


def test_small_blocks_and_untiled_rasters_are_read_directly(tmp_path):
    data = np.random.default_rng(1).integers(0, 256, (3, 300, 300), dtype=np.uint8)
    for name, extra in (("strips.tif", {}),
                        ("small.tif", {"tiled": True, "blockxsize": 128, "blockysize": 128})):
        scene = open_scene(write_tif(tmp_path / name, data, **extra))
        blocks = Blocks()
        spec = plan_grid(300, 300, (100, 100), 0.0, scene=0, extent=(0, 0, 300, 300))[4]
        tile = TileReader([scene], blocks).read(spec, (100, 100), (100, 100))
        assert np.array_equal(tile.pixels, data[:, 100:200, 100:200])
        assert not blocks._done


def test_each_block_is_decoded_once_for_all_threads():
    """Four threads ask for overlapping sets of blocks at the same moment: each block
    is decoded once, and every thread gets every block it asked for."""
    decoded: list = []
    lock, start = threading.Lock(), threading.Barrier(4)

    def decode(key):
        with lock:
            decoded.append(key)
        return Block(np.full((1, 4, 4), key, np.uint8), None)

    blocks = Blocks()

    def ask(first: int) -> dict:
        start.wait()
        return blocks.get(range(first, first + 8), decode)

    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(ask, [0, 2, 4, 6]))
    assert sorted(decoded) == list(range(14))
    for first, found in zip([0, 2, 4, 6], got, strict=True):
        assert sorted(found) == list(range(first, first + 8))
        assert all((b.pixels == k).all() for k, b in found.items())


def test_a_block_that_fails_raises_in_every_reader_and_is_read_again_later():
    calls, release = [], threading.Event()

    def failing(key):
        calls.append(key)
        release.wait(5)
        raise OSError(f"block {key} is corrupt")

    blocks = Blocks()
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(blocks.get, [7], failing)
        while not calls:  # the first reader is decoding block 7
            threading.Event().wait(0.01)
        second = pool.submit(blocks.get, [7], failing)
        release.set()
        for future in (first, second):
            with pytest.raises(OSError, match="block 7 is corrupt"):
                future.result()
    assert calls == [7]  # the second reader waited for the first one's decode
    fine = blocks.get([7], lambda key: Block(np.zeros((1, 2, 2)), None))
    assert list(fine) == [7]


def test_the_budget_drops_the_least_recently_used_blocks():
    size = np.zeros((1, 16, 16), np.uint8).nbytes
    blocks = Blocks(budget=3 * size)

    def decode(key):
        return Block(np.zeros((1, 16, 16), np.uint8), None)

    blocks.get([1, 2, 3], decode)
    blocks.get([1], decode)  # 1 is now the most recently used
    blocks.get([4], decode)
    assert list(blocks._done) == [3, 1, 4]

