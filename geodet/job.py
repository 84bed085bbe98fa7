"""The prepared job: every input checked and every tile planned before anything runs.

`prepare` raises `InputError` for anything the user can fix (scenes, model, output,
options that contradict each other) before a cluster is started or a file written.
Tiles are planned lazily (`geodet.tiling.Grid`): a job over a raster of any size
holds a few numbers and one bool per tile, and tile specs are made as they are sent.

An incremental ``--mosaic`` run plans the grid over the whole mosaic (old and new
files), as a one-shot run would, and limits the job to its *scope*: the tiles whose
window meets a new or changed file (`Job.scope`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
from rasterio.crs import CRS
from rasterio.errors import CRSError

from geodet.errors import InputError
from geodet.inputs import SceneRef, expand_scenes
from geodet.model import inspect_model, read_model
from geodet.mosaic import plan_mosaic
from geodet.options import Options
from geodet.read import data_extent, data_mask, tiles_with_data
from geodet.scene import open_scene
from geodet.settings import Settings, resolve
from geodet.tiling import Grid, TileSpec, plan_grid
from geodet.write import Output, check_output

PathLike = str | os.PathLike
#: Tile ids looked at a time by `Job.todo`.
TODO_BLOCK = 1 << 16
#: Per scene, a bool per tile id (a tile mask).
TileMasks = tuple[np.ndarray, ...]


@dataclass(frozen=True, eq=False)
class MosaicFiles:
    """The files of a ``--mosaic`` run's one scene."""

    refs: tuple[SceneRef, ...]  # every file, in order (signed when the run is incremental)
    windows: np.ndarray  # (n, 4) x0 y0 x1 y1 of each file in the mosaic's pixels
    fresh: np.ndarray  # (n,) bool: new or changed since the output was written


@dataclass(frozen=True, eq=False)
class Job:
    """One run, ready to execute."""

    options: Options
    settings: Settings
    refs: tuple[SceneRef, ...]  # where each scene of ``settings.scenes`` came from
    out: Output | None  # a path or URL; None: return the detections, write nothing
    out_crs: CRS | None  # None: each scene's own
    grids: tuple[Grid, ...]  # the tiles of each scene
    has_data: TileMasks  # tiles with at least one valid pixel; the others are never run
    model: bytes = field(repr=False)  # the ONNX file, read once
    mosaic: MosaicFiles | None = None  # with --mosaic (one scene): its files
    #: Per scene, the tiles this run covers (``has_data`` is False outside): an
    #: incremental mosaic's tiles over new or changed files. None: every tile.
    scope: TileMasks | None = None

    @property
    def n_tiles(self) -> int:
        if self.scope is not None:
            return sum(int(s.sum()) for s in self.scope)
        return sum(len(g) for g in self.grids)

    @property
    def n_empty(self) -> int:
        if self.scope is not None:
            return sum(int((s & ~m).sum()) for s, m in zip(self.scope, self.has_data,
                                                           strict=True))
        return sum(int((~m).sum()) for m in self.has_data)

    def in_scope(self, scene: int, tile_ids: np.ndarray) -> np.ndarray:
        """Which of the tiles ``tile_ids`` of ``scene`` this run covers."""
        if self.scope is None:
            return np.ones(len(tile_ids), dtype=bool)
        return self.scope[scene][tile_ids]

    def n_todo(self, done: TileMasks) -> int:
        """How many tiles `todo` yields."""
        return sum(int((m & ~d).sum()) for m, d in zip(self.has_data, done, strict=True))

    def todo(self, done: TileMasks) -> Iterator[TileSpec]:
        """The tiles still to run, in order: those with data, less those ``done``."""
        for grid, mask, skip in zip(self.grids, self.has_data, done, strict=True):
            for lo in range(0, len(grid), TODO_BLOCK):
                block = mask[lo:lo + TODO_BLOCK] & ~skip[lo:lo + TODO_BLOCK]
                for tile_id in (np.flatnonzero(block) + lo).tolist():
                    yield grid[tile_id]

    def cores(self, scene_ids: np.ndarray, tile_ids: np.ndarray) -> np.ndarray:
        """The core ``(N, 4)`` of the tile of each ``(scene_ids[k], tile_ids[k])``."""
        cores = np.zeros((len(scene_ids), 4))
        for i, grid in enumerate(self.grids):
            here = scene_ids == i
            cores[here] = grid.cores(tile_ids[here])
        return cores

    def plan(self, origins: Mapping[str, str] = MappingProxyType({})) -> dict:
        """What the run would do, for ``--dry-run``: each scene and its tiles, the
        tiles to skip, and every effective setting with where it came from
        (``origins``: the source of options given by the user, if known)."""
        scope = self.scope or tuple(np.ones(len(g), dtype=bool) for g in self.grids)
        scenes = [{"path": sc.path, "size": [sc.width, sc.height],
                   "crs": crs_name(sc.crs_wkt), "bands": list(sc.bands),
                   "tile": list(grid.tile), "tiles": int(here.sum()),
                   "tiles_empty": int((here & ~mask).sum())}
                  for sc, grid, mask, here in zip(self.settings.scenes, self.grids,
                                                  self.has_data, scope, strict=True)]
        settings = {name: {"value": value, "source": origins.get(name, "default")}
                    for name, value in self.options.model_dump(mode="json").items()}
        for name, chosen in self.settings.sources.items():
            settings[name] = {"value": chosen["value"],
                              "source": _relabel(chosen["source"], origins.get(name))}
        return {"scenes": scenes, "tiles": self.n_tiles, "tiles_to_skip": self.n_empty,
                "tiles_to_run": self.n_tiles - self.n_empty,
                "model": self.settings.model.path,
                "out": None if self.out is None else str(self.out), "settings": settings}


def describe_plan(plan: dict) -> str:
    """A `Job.plan` as lines for a person."""
    lines = [f"{len(plan['scenes'])} scenes, {plan['tiles']} tiles: {plan['tiles_to_run']} "
             f"to run, {plan['tiles_to_skip']} to skip (no valid pixel)"]
    lines += [f"  {s['path']}: {s['size'][0]} x {s['size'][1]} px, {s['crs']}, bands "
              f"{','.join(map(str, s['bands']))}, tiles of {s['tile'][0]} x {s['tile'][1]} px: "
              f"{s['tiles']} ({s['tiles_empty']} empty)" for s in plan["scenes"]]
    lines += [f"model: {plan['model']}", f"output: {plan['out'] or '(none)'}", "settings:"]
    lines += [f"  {name.replace('_', '-')} = {s['value']!r} ({s['source']})"
              for name, s in plan["settings"].items()]
    return "\n".join(lines)


def prepare(scenes: PathLike | Sequence[PathLike], model: PathLike, out: PathLike | None,
            options: Options,
            select: Callable[[list[SceneRef]], list[SceneRef]] | None = None) -> Job:
    """Check every input and plan every tile; raise `InputError` on the first problem.
    ``select``: which of the scenes to run (incremental runs: the new or changed ones,
    signed), by default all. With ``--mosaic`` the scene is every file, and ``select``
    limits the job's scope to the tiles over the files it picks (see the module doc)."""
    refs = expand_scenes([scenes] if isinstance(scenes, (str, os.PathLike)) else scenes,
                         options.asset)
    if not refs:
        raise InputError("no scene given: name at least one raster, pattern or list file")
    if options.incremental and out is None:
        raise InputError("--incremental extends an output with new scenes: give --out")
    out_path = (check_output(out, options.overwrite or options.incremental)
                if out is not None else None)
    chosen = select(refs) if select else refs
    out_crs = _parse_crs(options.out_crs) if options.out_crs else None
    files = None
    if options.mosaic and chosen:  # one scene over every file, old and new
        signed = {r.path: r for r in chosen}
        files_refs = tuple(signed.get(r.path, r) for r in refs)
        layout = plan_mosaic([r.path for r in files_refs])
        files = MosaicFiles(files_refs, np.array(layout.windows, dtype=np.int64).reshape(-1, 4),
                            np.array([r.path in signed for r in files_refs]))
        chosen = [SceneRef(layout.vrt)]
    refs = chosen
    model_bytes = read_model(model)
    info = inspect_model(model, model_bytes)
    settings = resolve(options, info, [open_scene(r.path, options.bands, options.scale)
                                       for r in refs])
    grids, has_data = [], []
    for i, scene in enumerate(settings.scenes):  # tiles over the data, flush with it
        mask = data_mask(scene)
        extent = data_extent(scene, mask)
        grids.append(plan_grid(scene.width, scene.height, settings.tiles[i],
                               settings.overlap, scene=i, extent=extent))
        has_data.append(tiles_with_data(scene, grids[-1], mask))
        if extent is None or not has_data[-1].any():
            raise InputError(f"scene {scene.name} has no valid pixel (all nodata, "
                             "transparent or masked): leave it out, or check its nodata "
                             "value")
    scope = None
    if files is not None and not files.fresh.all():
        scope = (tiles_over(grids[0], files.windows[files.fresh]),)
        has_data[0] = has_data[0] & scope[0]
    return Job(options=options, settings=settings, refs=tuple(refs), out=out_path,
               out_crs=out_crs, grids=tuple(grids), has_data=tuple(has_data),
               model=model_bytes, mosaic=files, scope=scope)


def tiles_over(grid: Grid, windows: np.ndarray) -> np.ndarray:
    """Which tiles of ``grid`` (a bool per tile id) overlap one of the ``windows``
    ``(n, 4)`` (x0 y0 x1 y1, scene pixels) by at least a pixel."""
    xs, ys = np.asarray(grid.xs), np.asarray(grid.ys)
    xe, ye = np.minimum(xs + grid.tile[0], grid.width), np.minimum(ys + grid.tile[1],
                                                                    grid.height)
    over = np.zeros((len(ys), len(xs)), dtype=bool)
    for x0, y0, x1, y1 in windows.tolist():
        over[np.ix_((ys < y1) & (ye > y0), (xs < x1) & (xe > x0))] = True
    return over.reshape(-1)


def _relabel(source: str | list, origin: str | None) -> str | list:
    """Settings say "command line" for any value the user gave: say where it came
    from (``origin``), when known."""
    if isinstance(source, list):
        return [_relabel(s, origin) for s in source]
    return source.replace("command line", origin) if origin else source


def crs_name(crs: object) -> str:
    """A CRS (WKT, a CRS object, anything rasterio reads) for a person: its EPSG code
    when it has one, else its name."""
    crs = CRS.from_user_input(crs)
    return crs.to_string() if crs.to_epsg() else crs.name


def _parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except (CRSError, ValueError):  # "EPSG:nope" raises a plain ValueError
        raise InputError(f"--out-crs {text!r} is not a coordinate reference system: give "
                         "one like EPSG:4326 or EPSG:32633") from None
