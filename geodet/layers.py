"""The output's layers: merged detections and tile outcomes as GeoDataFrames.

Detections and tiles are georeferenced scene by scene (`geodet.georef`), then
grouped into layers: one layer when the scenes share a CRS, one per CRS otherwise
(``detections_epsg_32633``...), or one reprojected to the job's ``out_crs``.
"""

from __future__ import annotations

from collections.abc import Iterator

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS

from geodet.detections import Detections, TileOutcome, TileStatus
from geodet.georef import boxes_to_polygons
from geodet.inputs import SceneRef
from geodet.job import Job
from geodet.model import ModelInfo
from geodet.resume import ResumeRecord
from geodet.scene import SceneInfo
from geodet.write import DETECTIONS_LAYER, TILES_LAYER, layer_names

#: Tiles per batch of the tiles layer: bounds the memory of writing it.
TILE_BATCH = 50_000
DETECTION_COLUMNS = ["class_id", "class_name", "score", "scene", "tile_id"]


def scene_names(job: Job) -> list[str]:
    """Each scene's name in the output's ``scene`` columns: the STAC item's id, else
    the file name."""
    return [r.item or s.name for s, r in zip(job.settings.scenes, job.refs, strict=True)]


def detection_frames(job: Job, merged: Detections) -> list[gpd.GeoDataFrame]:
    """Each scene's detections as polygons in the scene's CRS."""
    model = job.settings.model
    dated = any(ref.acquired for ref in job.refs)
    return [_detection_frame(merged.take(merged.scene_ids == i), scene, ref, name, model,
                             dated)
            for i, (scene, ref, name) in enumerate(zip(job.settings.scenes, job.refs,
                                                       scene_names(job), strict=True))]


def result_frame(job: Job, frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """All detections in one frame: in ``out_crs``, else the first scene's CRS."""
    if not frames:  # an incremental run with nothing new
        return gpd.GeoDataFrame(columns=DETECTION_COLUMNS, geometry=[], crs=job.out_crs)
    crs = job.out_crs or job.settings.scenes[0].crs_wkt
    return pd.concat([f.to_crs(crs) for f in frames], ignore_index=True)


def detection_layers(job: Job, frames: list[gpd.GeoDataFrame]) -> dict[str, gpd.GeoDataFrame]:
    return _by_crs(job, frames, DETECTIONS_LAYER)


def tile_layers(job: Job, record: ResumeRecord, batch: int = TILE_BATCH,
                first_id: int = 0) -> Iterator[tuple[str, gpd.GeoDataFrame]]:
    """Every tile's footprint and outcome (of the tiles in the job's scope), as
    ``(layer, frame)`` batches of at most ``batch`` tiles, grouped into layers like
    the detections: tiles without data are ``empty``, the others carry what the
    record holds. ``first_id`` is added to the tile ids (see `geodet.incremental`)."""
    names = _layer_of_scene(job, TILES_LAYER)
    for grid, scene, name, label in zip(job.grids, job.settings.scenes, names,
                                        scene_names(job), strict=True):
        for lo in range(0, len(grid), batch):
            ids = np.arange(lo, min(lo + batch, len(grid)))
            recorded = record.outcomes(grid.scene, lo, lo + len(ids))
            ids = ids[job.in_scope(grid.scene, ids)]
            if not len(ids):
                continue
            # Every tile with data ends in the record; the others were never run.
            outcomes = [recorded.get(t) or TileOutcome(grid.scene, t, TileStatus.EMPTY)
                        for t in ids.tolist()]
            frame = pd.DataFrame({
                "scene": pd.Series([label] * len(ids), dtype=object),
                "tile_id": ids.astype(np.int64) + first_id,
                "status": pd.Series([str(o.status) for o in outcomes], dtype=object),
                "n_detections": np.array([o.n_detections for o in outcomes], np.int64),
                "error": pd.Series([o.error for o in outcomes], dtype=object)})
            geoms = boxes_to_polygons(grid.bounds(ids), scene.affine)
            tiles = gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=scene.crs_wkt))
            yield name, tiles.to_crs(job.out_crs) if job.out_crs is not None else tiles


def _detection_frame(dets: Detections, scene: SceneInfo, ref: SceneRef, name: str,
                     model: ModelInfo, dated: bool) -> gpd.GeoDataFrame:
    """``dated``: add the ``acquired`` column (some scene of the run has a date)."""
    frame = pd.DataFrame({
        "class_id": dets.class_ids.astype(np.int32),
        "class_name": pd.Series([model.class_name(int(c)) for c in dets.class_ids],
                                dtype=object),
        "score": dets.scores.astype(np.float64),
        "scene": pd.Series([name] * len(dets), dtype=object),
        "tile_id": dets.tile_ids.astype(np.int64),
    })
    if dated:
        frame["acquired"] = pd.Series([ref.acquired] * len(dets),
                                      dtype="datetime64[ms, UTC]")
    geoms = boxes_to_polygons(dets.boxes, scene.affine, dets.angles)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=scene.crs_wkt))


def _crs_tag(crs: CRS, k: int) -> str:
    epsg = crs.to_epsg()
    return f"epsg_{epsg}" if epsg else f"crs_{k + 1}"


def _layer_of_scene(job: Job, base: str) -> list[str]:
    """The layer each scene's features go to (see module doc)."""
    if job.out_crs is not None:
        return [base] * len(job.settings.scenes)
    crss = [CRS.from_wkt(s.crs_wkt) for s in job.settings.scenes]
    distinct = list(dict.fromkeys(crss))
    names = layer_names(base, [_crs_tag(crs, k) for k, crs in enumerate(distinct)])
    return [names[distinct.index(crs)] for crs in crss]


def _by_crs(job: Job, frames: list[gpd.GeoDataFrame], base: str) -> dict[str, gpd.GeoDataFrame]:
    """Per-scene frames grouped into layers (see module doc)."""
    groups: dict[str, list[gpd.GeoDataFrame]] = {}
    for frame, name in zip(frames, _layer_of_scene(job, base), strict=True):
        groups.setdefault(name, []).append(
            frame.to_crs(job.out_crs) if job.out_crs is not None else frame)
    return {name: pd.concat(parts, ignore_index=True) for name, parts in groups.items()}
