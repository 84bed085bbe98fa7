import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geodet.tiling import axis_starts, owned, plan_tiles

sizes = st.integers(min_value=1, max_value=1500)
tiles = st.integers(min_value=16, max_value=700)
overlaps = st.floats(min_value=0, max_value=0.9)


@settings(max_examples=300, deadline=None)
@given(length=sizes, tile=tiles, overlap=overlaps)
def test_axis_covers_every_pixel_flush_and_inside(length, tile, overlap):
    ov = min(round(overlap * tile), tile - 1)
    starts = axis_starts(length, tile, ov)
    assert starts == sorted(set(starts)) and starts[0] == 0
    if length <= tile:
        assert starts == [0]
        return
    assert all(0 <= s <= length - tile for s in starts), "no tile reaches past the raster"
    assert starts[-1] + tile == length, "the last tile sits flush with the edge"
    for a, b in itertools.pairwise(starts):
        assert b - a <= tile - ov, "consecutive tiles overlap by at least the overlap"
        assert b > a


@settings(max_examples=120, deadline=None)
@given(w=sizes, h=sizes, tile=tiles, overlap=overlaps)
def test_plan_covers_raster_and_cores_partition_it(w, h, tile, overlap):
    specs = plan_tiles(w, h, (tile, tile), overlap)
    assert [s.tile_id for s in specs] == list(range(len(specs)))
    cover = np.zeros((min(h, 300), min(w, 300)), dtype=np.int32)
    owners = np.zeros_like(cover)
    for s in specs:
        assert s.col_off >= 0 and s.row_off >= 0
        assert s.col_off + s.width <= w and s.row_off + s.height <= h
        assert s.width == min(tile, w) and s.height == min(tile, h)
        if s.col_off < cover.shape[1] and s.row_off < cover.shape[0]:
            cover[s.row_off:s.row_off + s.height, s.col_off:s.col_off + s.width] += 1
            # Pixels whose centre (i + 0.5) lies in the half-open core [lo, hi).
            c0, r0, c1, r1 = (math.ceil(np.clip(v, -1, 1e6) - 0.5) for v in s.core)
            owners[max(r0, 0):max(r1, 0), max(c0, 0):max(c1, 0)] += 1
        x0, y0, x1, y1 = s.core
        # A tile's core lies inside the tile itself.
        assert x0 == -math.inf or s.col_off <= x0
        assert x1 == math.inf or x1 <= s.col_off + s.width
        assert y0 == -math.inf or s.row_off <= y0
        assert y1 == math.inf or y1 <= s.row_off + s.height
    assert (cover >= 1).all(), "every pixel is covered"
    assert (owners == 1).all(), "every pixel centre is owned by exactly one tile"


def test_known_grid():
    specs = plan_tiles(1000, 300, (256, 256), 0.25)
    xs = sorted({s.col_off for s in specs})
    assert xs == [0, 192, 384, 576, 744]
    assert sorted({s.row_off for s in specs}) == [0, 44]
    first = specs[0]
    assert first.core == (-math.inf, -math.inf, (192 + 256) / 2, (44 + 256) / 2)


def test_raster_smaller_than_tile_is_one_window():
    [spec] = plan_tiles(100, 50, (256, 256), 0.2)
    assert (spec.col_off, spec.row_off, spec.width, spec.height) == (0, 0, 100, 50)


@pytest.mark.parametrize("overlap", [-0.1, 1.0, 1.5])
def test_bad_overlap(overlap):
    with pytest.raises(ValueError, match="overlap"):
        plan_tiles(100, 100, (32, 32), overlap)


def test_owned_is_half_open():
    centres = np.array([[0.0, 0.0], [10.0, 5.0], [9.999, 5.0], [-5.0, 3.0]])
    assert owned(centres, (0.0, 0.0, 10.0, 10.0)).tolist() == [True, False, True, False]
    assert owned(centres, (-math.inf, -math.inf, 10.0, 10.0)).tolist() == [
        True, False, True, True]
