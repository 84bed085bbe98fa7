"""The prepared job: every input checked and every tile planned before anything runs.

`prepare` raises `InputError` for anything the user can fix (scenes, model, output,
options that contradict each other) before a cluster is started or a file written.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rasterio.crs import CRS
from rasterio.errors import CRSError

from geodet.detections import ChunkResult, Detections, TileOutcome, TileStatus
from geodet.errors import InputError
from geodet.inputs import expand_scenes
from geodet.model import inspect_model
from geodet.options import Options
from geodet.read import tiles_with_data
from geodet.scene import open_scene
from geodet.settings import Settings, resolve
from geodet.tiling import TileSpec, plan_tiles
from geodet.write import check_output

PathLike = str | os.PathLike


@dataclass(frozen=True)
class Job:
    """One run, ready to execute."""

    options: Options
    settings: Settings
    out: Path | None  # None: return the detections, write nothing
    out_crs: CRS | None  # None: each scene's own
    tiles: tuple[TileSpec, ...]  # every tile of every scene
    empty: ChunkResult  # the tiles without a valid pixel: never run

    def todo(self, done: ChunkResult) -> list[TileSpec]:
        """The tiles still to run, besides the empty ones and those in ``done``."""
        skip = {(o.scene, o.tile_id) for o in (*self.empty.tiles, *done.tiles)}
        return [t for t in self.tiles if (t.scene, t.tile_id) not in skip]


def prepare(scenes: PathLike | Sequence[PathLike], model: PathLike, out: PathLike | None,
            options: Options) -> Job:
    """Check every input and plan every tile; raise `InputError` on the first problem."""
    paths = expand_scenes([scenes] if isinstance(scenes, (str, os.PathLike)) else scenes)
    if not paths:
        raise InputError("no scene given: name at least one raster, pattern or list file")
    out_path = check_output(out, options.overwrite) if out is not None else None
    out_crs = _parse_crs(options.out_crs) if options.out_crs else None
    info = inspect_model(model)
    settings = resolve(options, info, [open_scene(p, options.bands) for p in paths])
    tiles, empty = [], []
    for i, scene in enumerate(settings.scenes):
        planned = plan_tiles(scene.width, scene.height, settings.tiles[i], settings.overlap,
                             scene=i)
        tiles += planned
        empty += [TileOutcome(i, t.tile_id, TileStatus.EMPTY)
                  for t, has_data in zip(planned, tiles_with_data(scene, planned),
                                         strict=True) if not has_data]
    return Job(options=options, settings=settings, out=out_path, out_crs=out_crs,
               tiles=tuple(tiles), empty=ChunkResult(Detections.empty(), tuple(empty), ""))


def _parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError):  # "EPSG:nope" raises a plain ValueError
        raise InputError(f"--out-crs {text!r} is not a coordinate reference system: give "
                         "one like EPSG:4326 or EPSG:32633") from None
