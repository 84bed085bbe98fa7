"""A raster of 10^12 pixels is planned without an object per tile (issue 15): the job
holds offsets and one bool per tile, and tile specs are made as they are drawn."""

from __future__ import annotations

import itertools
import tracemalloc

import numpy as np

from geodet.demo import bundled_model
from geodet.job import prepare
from geodet.options import Options
from tests.helpers import write_tif

SIDE = 1_000_000


def test_a_trillion_pixel_vrt_is_planned_lazily(tmp_path):
    write_tif(tmp_path / "small.tif", np.full((3, 64, 64), 90, np.uint8))
    bands = "".join(
        f'<VRTRasterBand dataType="Byte" band="{b}"><SimpleSource>'
        f'<SourceFilename relativeToVRT="1">small.tif</SourceFilename><SourceBand>{b}'
        '</SourceBand><SrcRect xOff="0" yOff="0" xSize="64" ySize="64"/>'
        '<DstRect xOff="0" yOff="0" xSize="64" ySize="64"/></SimpleSource></VRTRasterBand>'
        for b in (1, 2, 3))
    vrt = tmp_path / "huge.vrt"
    vrt.write_text(f'<VRTDataset rasterXSize="{SIDE}" rasterYSize="{SIDE}">'
                   "<SRS>EPSG:32633</SRS><GeoTransform>500000, 0.1, 0, 5400000, 0, -0.1"
                   f"</GeoTransform>{bands}</VRTDataset>")
    tracemalloc.start()
    job = prepare(vrt, bundled_model(), None, Options())
    done = tuple(np.zeros(len(g), bool) for g in job.grids)
    first = list(itertools.islice(job.todo(done), 3))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert job.n_tiles == len(job.grids[0]) > 20_000_000  # 256 px tiles, overlap 0.2
    assert job.n_todo(done) == job.n_tiles
    assert [t.tile_id for t in first] == [0, 1, 2] and first[1].col_off > 0
    last = job.grids[0][job.n_tiles - 1]
    assert (last.col_off + last.width, last.row_off + last.height) == (SIDE, SIDE)
    # A bool per tile (~24 MB) and a few numbers: one object per tile would be GBs.
    assert peak < 150 * 2**20, f"planning took {peak / 2**20:.0f} MiB"
