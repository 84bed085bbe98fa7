"""The output's layers: merged detections and tile outcomes as GeoDataFrames.

Detections and tiles are georeferenced scene by scene (`geodet.georef`), then
grouped into layers: one layer when the scenes share a CRS, one per CRS otherwise
(``detections_epsg_32633``...), or one reprojected to the job's ``out_crs``.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS

from geodet.detections import Detections, TileOutcome
from geodet.georef import boxes_to_polygons
from geodet.job import Job
from geodet.model import ModelInfo
from geodet.scene import SceneInfo
from geodet.tiling import TileSpec
from geodet.write import DETECTIONS_LAYER, TILES_LAYER, layer_names

TILE_COLUMNS = ["scene", "tile_id", "status", "n_detections", "error"]


def detection_frames(job: Job, merged: Detections) -> list[gpd.GeoDataFrame]:
    """Each scene's detections as polygons in the scene's CRS."""
    model = job.settings.model
    return [_detection_frame(merged.take(merged.scene_ids == i), scene, model)
            for i, scene in enumerate(job.settings.scenes)]


def result_frame(job: Job, frames: list[gpd.GeoDataFrame]) -> gpd.GeoDataFrame:
    """All detections in one frame: in ``out_crs``, else the first scene's CRS."""
    crs = job.out_crs or job.settings.scenes[0].crs_wkt
    return pd.concat([f.to_crs(crs) for f in frames], ignore_index=True)


def detection_layers(job: Job, frames: list[gpd.GeoDataFrame]) -> dict[str, gpd.GeoDataFrame]:
    return _by_crs(job, frames, DETECTIONS_LAYER)


def tile_layers(job: Job, outcomes: tuple[TileOutcome, ...]) -> dict[str, gpd.GeoDataFrame]:
    """Every tile's footprint and outcome, grouped like the detections."""
    by_tile = {(o.scene, o.tile_id): o for o in outcomes}
    frames = [_tile_frame(scene, [t for t in job.tiles if t.scene == i], by_tile)
              for i, scene in enumerate(job.settings.scenes)]
    return _by_crs(job, frames, TILES_LAYER)


def _detection_frame(dets: Detections, scene: SceneInfo,
                     model: ModelInfo) -> gpd.GeoDataFrame:
    frame = pd.DataFrame({
        "class_id": dets.class_ids.astype(np.int32),
        "class_name": pd.Series([model.class_name(int(c)) for c in dets.class_ids],
                                dtype=object),
        "score": dets.scores.astype(np.float64),
        "scene": pd.Series([scene.name] * len(dets), dtype=object),
        "tile_id": dets.tile_ids.astype(np.int64),
    })
    geoms = boxes_to_polygons(dets.boxes, scene.affine, dets.angles)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=scene.crs_wkt))


def _tile_frame(scene: SceneInfo, tiles: list[TileSpec],
                outcomes: dict[tuple[int, int], TileOutcome]) -> gpd.GeoDataFrame:
    rows = [{"scene": scene.name, "tile_id": t.tile_id, "status": str(o.status),
             "n_detections": o.n_detections, "error": o.error}
            for t in tiles for o in [outcomes[(t.scene, t.tile_id)]]]
    frame = pd.DataFrame(rows, columns=TILE_COLUMNS)
    geoms = boxes_to_polygons(np.array([t.bounds for t in tiles], float).reshape(-1, 4),
                              scene.affine)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=scene.crs_wkt))


def _crs_tag(crs: CRS, k: int) -> str:
    epsg = crs.to_epsg()
    return f"epsg_{epsg}" if epsg else f"crs_{k + 1}"


def _by_crs(job: Job, frames: list[gpd.GeoDataFrame], base: str) -> dict[str, gpd.GeoDataFrame]:
    """Per-scene frames grouped into layers (see module doc)."""
    if job.out_crs is not None:
        return {base: pd.concat([f.to_crs(job.out_crs) for f in frames], ignore_index=True)}
    groups: dict[CRS, list[gpd.GeoDataFrame]] = {}
    for frame, scene in zip(frames, job.settings.scenes, strict=True):
        groups.setdefault(CRS.from_wkt(scene.crs_wkt), []).append(frame)
    names = layer_names(base, [_crs_tag(crs, k) for k, crs in enumerate(groups)])
    return {name: pd.concat(parts, ignore_index=True)
            for name, parts in zip(names, groups.values(), strict=True)}
