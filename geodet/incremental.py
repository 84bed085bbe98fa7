"""Incremental runs (``--incremental``): only the scenes an existing output lacks.

An output's ``geodet_scenes`` table records each scene it holds: path, name (the
``scene`` column) and signature (the object's ETag, else its size and modification
time). An incremental run reads the output (`Previous.read`), runs only the scenes
that are new or whose signature changed (`Previous.select`), and writes the output
again (atomically, like any run) with every other scene's detections and tiles
carried over unchanged and a changed scene's replaced (`Previous.carry`). The
previous ``geodet_runs`` rows are kept and the run adds its own. An output made with
another model or other detection settings is refused (`Previous.check`).

With ``--mosaic`` the scenes table records every file of the mosaic, and the one
scene is the mosaic of all of them, old and new: its grid is planned as a one-shot run
would plan it, and the run covers only the tiles that meet a new or changed file
(`geodet.job.Job.scope`). Those tiles' cores are the region the run now owns:
`Previous.join_mosaic` drops the previous detections whose centre lies there and
merges the run's detections with the previous ones near it in the same pass as a
one-shot run's seams (the previous ones *settled*, see `geodet.merge`), so an object
on the border of a new file is found once, whole; everything is compared in the
mosaic's pixels of this run, found from the stored map coordinates, so a file that
arrives to the west or north (which moves the mosaic's origin) changes nothing. The
previous tiles whose centre lies in that region, or that meet a new or changed file,
are replaced by this run's, whose ids follow the previous ones (ids stay unique).
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from rasterio.crs import CRS

from geodet import storage
from geodet.detections import Detections
from geodet.errors import InputError, one_line
from geodet.georef import polygons_to_boxes
from geodet.inputs import SceneRef
from geodet.job import Job, crs_name
from geodet.layers import scene_names
from geodet.merge import merge
from geodet.mosaic import GRID_TOLERANCE
from geodet.remote import fsspec_url
from geodet.write import DETECTIONS_LAYER, RUNS_TABLE, SCENES_TABLE, TILES_LAYER, Output

SCENE_COLUMNS = ["path", "scene", "signature"]
Layers = dict[str, gpd.GeoDataFrame]
TileBatch = tuple[str, gpd.GeoDataFrame]  # a batch of a tiles layer (`geodet.layers`)


def signature(path: str) -> str:
    """What identifies this version of a scene: its ETag, else size and mtime."""
    fs, where = storage.filesystem(fsspec_url(path))
    try:
        info = fs.info(where)
    except Exception as e:  # clients raise their own types (botocore, aiohttp...)
        raise InputError(one_line(f"cannot check whether {path} changed", e)) from None
    etag = info.get("ETag") or info.get("etag")
    if etag:
        return f"etag {etag}"
    modified = next((info[k] for k in ("mtime", "LastModified", "Last-Modified",
                                       "last_modified") if info.get(k)), "unknown")
    return f"size {info.get('size')} modified {modified}"


@dataclass(frozen=True, eq=False)
class MosaicJoin:
    """What an incremental mosaic run changes in the output (`Previous.join_mosaic`)."""

    #: To add: the run's detections and the previous ones the seam pass changed
    #: (boxes united), with their final tile ids.
    detections: Detections
    dropped: dict[str, np.ndarray]  # per layer of the output, a bool per row: replaced
    first_id: int  # added to this run's tile ids, after the ids the output keeps


@dataclass(frozen=True)
class Previous:
    """What an existing output holds (all empty when there is none yet)."""

    layers: dict[str, gpd.GeoDataFrame]  # detections* and tiles* layers by name
    runs: pd.DataFrame
    scenes: pd.DataFrame  # SCENE_COLUMNS

    @classmethod
    def read(cls, out: Output) -> Previous:
        if isinstance(out, str):  # a URL: read a local copy
            with tempfile.TemporaryDirectory(prefix="geodet-") as folder:
                local = Path(folder) / "previous.gpkg"
                storage.download(out, local)
                return cls.read(local)
        if not out.exists():
            return cls({}, pd.DataFrame(), pd.DataFrame(columns=SCENE_COLUMNS))
        names = [str(n) for n, _ in pyogrio.list_layers(out)]
        if SCENES_TABLE not in names:
            raise InputError(f"{out} was not written by an incremental run (it has no "
                             f"{SCENES_TABLE} table): start a new output")
        return cls({n: pyogrio.read_dataframe(out, layer=n) for n in names
                    if n.startswith((DETECTIONS_LAYER, TILES_LAYER))},
                   pyogrio.read_dataframe(out, layer=RUNS_TABLE),
                   pyogrio.read_dataframe(out, layer=SCENES_TABLE))

    def select(self, refs: list[SceneRef]) -> list[SceneRef]:
        """The scenes to run: new or changed since the output was written, each with
        the signature it has now."""
        known = dict(zip(self.scenes["path"], self.scenes["signature"], strict=True))
        signed = [dataclasses.replace(r, signature=signature(r.path)) for r in refs]
        return [r for r in signed if known.get(r.path) != r.signature]

    def check(self, settings: dict, out: Output) -> None:
        """Refuse to extend an output made with another model or other settings."""
        if self.runs.empty:
            return
        made_with = json.loads(self.runs["detection_settings"].iloc[-1])
        differ = sorted(k for k in {*made_with, *settings}
                        if made_with.get(k) != settings.get(k))
        if differ:
            raise InputError(f"{out} was made with another model or other settings "
                             f"({', '.join(differ)}): start a new output, or run without "
                             "--incremental and with --overwrite to redo it all")

    def check_mosaic(self, job: Job) -> None:
        """Refuse a mosaic whose files do not fit the ones already in the output: the
        previous tiles must lie in the mosaic's CRS and on its pixel grid."""
        if job.mosaic is None or job.out_crs is not None:
            return
        scene, name = job.settings.scenes[0], scene_names(job)[0]
        for layer, frame in self.layers.items():
            mine = frame[frame["scene"] == name]
            if not layer.startswith(TILES_LAYER) or mine.empty:
                continue
            if CRS.from_user_input(frame.crs) != CRS.from_wkt(scene.crs_wkt):
                raise InputError(f"the mosaic's files are in {crs_name(scene.crs_wkt)} but "
                                 f"the output's mosaic is in {crs_name(frame.crs)}: "
                                 "reproject the new files, or start a new output")
            corners = polygons_to_boxes(mine.geometry.values, scene.affine)
            if np.abs(corners - np.round(corners)).max() > GRID_TOLERANCE:
                raise InputError("the mosaic's files are not on the pixel grid of the "
                                 "files already in the output: align them with gdalwarp "
                                 "-tap, or start a new output")

    def join_mosaic(self, job: Job, found: Detections) -> MosaicJoin:
        """Merge an incremental mosaic run's detections ``found`` (before the global
        merge) into the output's (see the module doc)."""
        grid, scene, name = job.grids[0], job.settings.scenes[0], scene_names(job)[0]
        mine = {n: (f["scene"] == name).to_numpy() for n, f in self.layers.items()}
        dropped = {n: m.copy() if job.scope is None else np.zeros(len(m), dtype=bool)
                   for n, m in mine.items()}
        settled, rows = [], []  # the previous detections near the region, and their rows
        scope_windows = grid.bounds(np.flatnonzero(job.scope[0])) if job.scope else None
        fresh = job.mosaic.windows[job.mosaic.fresh].astype(float)
        for n, frame in self.layers.items():
            if job.scope is None or not mine[n].any():
                continue
            at = np.flatnonzero(mine[n])
            boxes = polygons_to_boxes(frame.geometry.iloc[at].to_crs(scene.crs_wkt).values,
                                      scene.affine)
            owned = job.in_scope(0, grid.owners((boxes[:, :2] + boxes[:, 2:]) / 2))
            if n.startswith(TILES_LAYER):  # tiles of the region, or over changed pixels
                dropped[n][at[owned | _overlaps(boxes, fresh)]] = True
                continue
            dropped[n][at[owned]] = True
            near = ~owned & _overlaps(boxes, scope_windows, touching=True)
            part = frame.iloc[at[near]]
            settled.append(Detections.build(boxes[near], part["score"], part["class_id"], 0,
                                            0))
            rows.append((n, at[near], part["tile_id"].to_numpy(np.int64)))
        kept_ids = [f.loc[~dropped[n] & mine[n], "tile_id"] for n, f in self.layers.items()
                    if n.startswith(TILES_LAYER)]
        first_id = int(max((i.max() for i in kept_ids if len(i)), default=-1)) + 1
        old = Detections.concat(settled)
        old = dataclasses.replace(old, tile_ids=-1 - np.arange(len(old), dtype=np.int64))
        new = found.take(job.in_scope(0, grid.owners(found.centres)))
        both = Detections.concat([new, old])
        is_old = np.arange(len(both)) >= len(new)
        o = job.options
        merged = merge(both, o.merge, job.settings.iou, o.ios, not o.class_agnostic,
                       cores=np.concatenate([job.cores(new.scene_ids, new.tile_ids),
                                             old.boxes]),
                       settled=is_old).sorted()
        # Previous detections that came out unchanged keep their rows; the others go,
        # and those that absorbed a new one come back with their united box.
        k = -1 - merged.tile_ids
        was_old = k >= 0
        same = np.zeros(len(merged), dtype=bool)
        same[was_old] = (merged.boxes[was_old] == old.boxes[k[was_old]]).all(axis=1)
        keep_rows = set(k[was_old & same].tolist())
        layer_of = np.concatenate([[n] * len(r) for n, r, _ in rows]) if rows else []
        row_of = np.concatenate([r for _, r, _ in rows]) if rows else np.zeros(0, int)
        tile_of = np.concatenate([t for _, _, t in rows]) if rows else np.zeros(0, int)
        for kk in range(len(old)):
            if kk not in keep_rows:
                dropped[layer_of[kk]][row_of[kk]] = True
        tile_ids = np.where(was_old, tile_of[np.clip(k, 0, None)] if len(old) else 0,
                            merged.tile_ids + first_id)
        added = dataclasses.replace(merged, tile_ids=tile_ids).take(~(was_old & same))
        return MosaicJoin(added, dropped, first_id)

    def extend_mosaic(self, job: Job, join: MosaicJoin, detections: Layers,
                      tiles: Iterable[TileBatch], run: dict, failed: np.ndarray,
                      ) -> tuple[Layers, Iterator[TileBatch], list[dict], dict[str, pd.DataFrame]]:
        """The whole output after an incremental mosaic run: as `extend`, with the rows
        ``join`` replaced; in the scenes table every file of the mosaic, those that
        meet a ``failed`` tile (tile ids) without a signature, to be done again."""
        files = job.mosaic
        kept = {n: f[~join.dropped[n]] for n, f in self.layers.items()}
        failed_windows = job.grids[0].bounds(failed)
        redo = _overlaps(files.windows.astype(float), failed_windows)
        known = dict(zip(self.scenes["path"], self.scenes["signature"], strict=True))
        paths = [r.path for r in files.refs]
        name = scene_names(job)[0]
        new = pd.DataFrame({"path": paths, "scene": [name] * len(paths),
                            "signature": [None if bad else r.signature if fresh
                                          else known.get(r.path)
                                          for r, fresh, bad in zip(files.refs, files.fresh,
                                                                   redo, strict=True)]},
                           columns=SCENE_COLUMNS)
        return _joined(kept, detections, tiles, [*self.runs.to_dict("records"), run],
                       self.scenes[~self.scenes["path"].isin(paths)], new)

    def extend(self, refs: tuple[SceneRef, ...], names: list[str], detections: Layers,
               tiles: Iterable[TileBatch], run: dict, failed: set[int],
               ) -> tuple[Layers, Iterator[TileBatch], list[dict], dict[str, pd.DataFrame]]:
        """The whole output after this run: its ``detections`` and ``tiles`` layers (by
        name) added to the previous ones, less their rows of the scenes run again;
        every run; the scenes table, where the scenes with ``failed`` tiles (indexes
        into ``refs``) have no signature, so that the next run does them again."""
        paths = [r.path for r in refs]
        rerun = {*self.scenes.loc[self.scenes["path"].isin(paths), "scene"], *names}
        kept = {n: f[~f["scene"].isin(rerun)] for n, f in self.layers.items()}
        new = pd.DataFrame({"path": paths, "scene": names,
                            "signature": [None if i in failed else r.signature
                                          for i, r in enumerate(refs)]},
                           columns=SCENE_COLUMNS)
        return _joined(kept, detections, tiles, [*self.runs.to_dict("records"), run],
                       self.scenes[~self.scenes["path"].isin(paths)], new)


def _joined(kept: Layers, detections: Layers, tiles: Iterable[TileBatch], runs: list[dict],
            old_scenes: pd.DataFrame, new_scenes: pd.DataFrame,
            ) -> tuple[Layers, Iterator[TileBatch], list[dict], dict[str, pd.DataFrame]]:
    """The previous layers' ``kept`` rows and this run's, in the previous layers'
    CRSs; the scenes table."""
    crs = {n: f.crs for n, f in kept.items()}
    merged = {n: f for n, f in kept.items() if n.startswith(DETECTIONS_LAYER)}
    for name, frame in detections.items():
        merged[name] = (pd.concat([merged[name], frame.to_crs(crs[name])],
                                  ignore_index=True) if name in merged else frame)
    old_tiles = [(n, f) for n, f in kept.items() if n.startswith(TILES_LAYER)]
    new_tiles = ((n, f.to_crs(crs[n]) if n in crs else f) for n, f in tiles)
    scenes = (pd.concat([old_scenes, new_scenes], ignore_index=True) if len(old_scenes)
              else new_scenes)
    return merged, chain(old_tiles, new_tiles), runs, {SCENES_TABLE: scenes}


def _overlaps(boxes: np.ndarray, windows: np.ndarray | None,
              touching: bool = False) -> np.ndarray:
    """Which ``boxes`` ``(N, 4)`` overlap one of the ``windows`` ``(M, 4)`` (x0 y0 x1
    y1) by some area, or just touch one with ``touching``."""
    if windows is None or not len(windows) or not len(boxes):
        return np.zeros(len(boxes), dtype=bool)
    pairs = shapely.STRtree(shapely.box(*windows.T)).query(shapely.box(*boxes.T),
                                                          predicate="intersects")
    if not touching:  # by some area
        b, w = boxes[pairs[0]], windows[pairs[1]]
        pairs = pairs[:, (np.minimum(b[:, 2], w[:, 2]) > np.maximum(b[:, 0], w[:, 0]))
                      & (np.minimum(b[:, 3], w[:, 3]) > np.maximum(b[:, 1], w[:, 1]))]
    hits = np.zeros(len(boxes), dtype=bool)
    hits[pairs[0]] = True
    return hits

