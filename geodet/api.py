"""`geodet.detect`: the whole pipeline, plan -> read -> infer -> merge -> write."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import geopandas as gpd
import numpy as np
import pandas as pd
from rasterio.crs import CRS
from tqdm import tqdm

from geodet import __version__, engine
from geodet.config import DetectConfig
from geodet.detections import Detections
from geodet.errors import InputError
from geodet.georef import boxes_to_polygons
from geodet.inputs import expand_scenes
from geodet.merge import merge as merge_detections
from geodet.model import ModelInfo, inspect_model
from geodet.output import (
    DETECTIONS_LAYER,
    TILES_LAYER,
    check_output,
    layer_names,
    write_geopackage,
)
from geodet.progress import Progress
from geodet.raster import SceneInfo, open_scene, tiles_with_data
from geodet.settings import resolve
from geodet.tiling import TileSpec, plan_tiles
from geodet.worker import RunSettings, TileOutcome

log = logging.getLogger("geodet")


def _check_fit(model: ModelInfo, scenes: list[SceneInfo]) -> None:
    for s in scenes:
        if len(s.bands) != model.channels:
            raise InputError(
                f"model takes {model.channels} channels but scene {s.path} gives "
                f"{len(s.bands)} (bands {list(s.bands)}): choose bands with --bands, "
                f"for example --bands {','.join(str(b) for b in range(1, model.channels + 1))}"
            )


def _tile_frame(scene: SceneInfo, specs: list[TileSpec],
                outcomes: dict[tuple[int, int], TileOutcome]) -> gpd.GeoDataFrame:
    """The footprints and outcomes of one scene's tiles, in the scene's CRS."""
    rows = [{"scene": scene.name, "tile_id": s.tile_id, "status": o.status,
             "n_detections": o.n_detections, "error": o.error}
            for s in specs for o in [outcomes[(s.scene, s.tile_id)]]]
    frame = pd.DataFrame(rows, columns=["scene", "tile_id", "status", "n_detections", "error"])
    geoms = boxes_to_polygons(np.array([s.bounds for s in specs], float).reshape(-1, 4),
                              scene.affine)
    return gpd.GeoDataFrame(frame, geometry=gpd.GeoSeries(geoms, crs=scene.crs_wkt))


def _cores_of(dets: Detections, specs: list[TileSpec]) -> np.ndarray:
    """The core of each detection's tile, ``(N, 4)``."""
    n_scenes = max((s.scene for s in specs), default=-1) + 1
    n_tiles = max((s.tile_id for s in specs), default=-1) + 1
    table = np.zeros((n_scenes, n_tiles, 4))
    for s in specs:
        table[s.scene, s.tile_id] = s.core
    return table[dets.scene_ids, dets.tile_ids]


def _detection_frame(dets: Detections, scene: SceneInfo,
                     model: ModelInfo) -> gpd.GeoDataFrame:
    """One scene's detections as polygons in the scene's CRS."""
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


def _parse_crs(text: str) -> CRS:
    try:
        return CRS.from_user_input(text)
    except Exception:
        raise InputError(f"--out-crs {text!r} is not a coordinate reference system: give "
                         "one like EPSG:4326 or EPSG:32633") from None


def _crs_tag(crs: CRS, k: int) -> str:
    epsg = crs.to_epsg()
    return f"epsg_{epsg}" if epsg else f"crs_{k + 1}"


def _by_crs(frames: list[gpd.GeoDataFrame], scenes: list[SceneInfo], base: str,
            out_crs: CRS | None) -> dict[str, gpd.GeoDataFrame]:
    """Per-scene frames grouped into layers: one layer reprojected to ``out_crs``, one
    layer when the scenes share a CRS, else one layer per CRS."""
    if out_crs is not None:
        return {base: pd.concat([f.to_crs(out_crs) for f in frames], ignore_index=True)}
    groups: dict[CRS, list[gpd.GeoDataFrame]] = {}
    for frame, scene in zip(frames, scenes, strict=True):
        groups.setdefault(CRS.from_wkt(scene.crs_wkt), []).append(frame)
    names = layer_names(base, [_crs_tag(crs, k) for k, crs in enumerate(groups)])
    return {name: pd.concat(parts, ignore_index=True)
            for name, parts in zip(names, groups.values(), strict=True)}


def detect(
    scenes: str | os.PathLike | Sequence[str | os.PathLike],
    model: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    tile_size: int | None = None,
    gsd: float | None = None,
    overlap: float | None = None,
    conf: float | None = None,
    iou: float | None = None,
    merge: str = "ownership",
    ios: float = 0.5,
    class_agnostic: bool = False,
    batch_size: int = 8,
    workers: int | None = None,
    device: str = "auto",
    bands: Sequence[int] | None = None,
    layout: str | None = None,
    overwrite: bool = False,
    out_crs: str | None = None,
    resume: bool = False,
    address: str | None = None,
    progress: bool = True,
) -> gpd.GeoDataFrame:
    """Detect objects in georeferenced rasters; optionally write a GeoPackage.

    ``scenes``: paths or GDAL URLs, glob patterns, or .txt/.lst files listing them.

    ``overlap``, ``conf``, ``iou`` and ``gsd`` (ground metres per pixel the model
    should see) left as None come from the model's metadata, else defaults. Returns
    the detections as a GeoDataFrame in the scenes' CRS (one polygon per box).
    Scenes may be in different CRSs: the GeoPackage then holds one detections (and
    tiles) layer per CRS, or a single one reprojected to ``out_crs``; the returned
    frame is in ``out_crs``, else in the first scene's CRS.
    ``result.attrs["geodet"]`` holds the run summary also written to the
    GeoPackage's ``geodet_runs`` table, including ``tiles_failed``. Bad input raises
    `geodet.InputError` before anything is started or written.
    """
    started, t0 = datetime.now(UTC), time.perf_counter()
    if isinstance(scenes, (str, os.PathLike)):
        scenes = [scenes]
    cfg = DetectConfig.parse(
        scenes=expand_scenes(scenes), model=os.fspath(model),
        out=os.fspath(out) if out is not None else None, tile_size=tile_size,
        gsd=gsd, overlap=overlap, conf=conf, iou=iou, merge=merge, ios=ios,
        class_agnostic=class_agnostic, batch_size=batch_size, workers=workers, device=device,
        bands=tuple(bands) if bands is not None else None, layout=layout,
        overwrite=overwrite, out_crs=out_crs, resume=resume, address=address,
        progress=progress)

    out_path = check_output(cfg.out, cfg.overwrite) if cfg.out else None
    out_crs = _parse_crs(cfg.out_crs) if cfg.out_crs else None
    info = inspect_model(cfg.model)
    scene_infos = [open_scene(p, cfg.bands) for p in cfg.scenes]
    _check_fit(info, scene_infos)
    eff = resolve(cfg, info, scene_infos)

    specs, outcomes = [], {}
    for i, scene in enumerate(scene_infos):
        planned = plan_tiles(scene.width, scene.height, eff.tiles[i], eff.overlap, scene=i)
        for spec, has_data in zip(planned, tiles_with_data(scene, planned), strict=True):
            specs.append(spec)
            if not has_data:
                outcomes[(i, spec.tile_id)] = TileOutcome(i, spec.tile_id, "empty", 0)
    parameters = {
        "tiles": [list(t) for t in eff.tiles], "input_size": list(eff.model_tile),
        "overlap": eff.overlap, "conf": eff.conf, "iou": eff.iou, "gsd": eff.gsd,
        "merge": cfg.merge, "ios": cfg.ios, "class_agnostic": cfg.class_agnostic,
        "batch_size": cfg.batch_size, "device": cfg.device,
        "bands": [list(s.bands) for s in scene_infos],
        "scene_gsd": [list(s.gsd) if s.gsd else None for s in scene_infos]}
    parts, seconds, used = [], {"read": 0.0, "infer": 0.0}, set()
    with engine.ray_cluster(cfg.address):
        n_actors, resources, dev, threads = engine.plan_actors(cfg.device, cfg.workers)
        settings = RunSettings(
            model=info, layout=eff.layout, scenes=tuple(scene_infos), tiles=eff.tiles,
            input_size=eff.model_tile, batch_size=cfg.batch_size, conf=eff.conf,
            iou=eff.iou, own_cores=cfg.merge == "ownership", mean=eff.mean, std=eff.std,
            class_aware=not cfg.class_agnostic, device=dev, threads=threads)
        actors, providers = engine.start_detectors(settings, n_actors, resources)
        if dev == "cuda" and any(p != "CUDAExecutionProvider" for p in providers):
            log.warning("GPU requested but ONNX Runtime runs on %s: check that "
                        "onnxruntime-gpu and its CUDA libraries are installed", providers)
        record = None
        if out_path is not None:  # per-tile progress on disk, for --resume
            fingerprint = {"model": info.sha256, "scenes": [s.path for s in scene_infos],
                           "layout": eff.layout, "mean": eff.mean, "std": eff.std,
                           **parameters}
            fingerprint.pop("batch_size")
            fingerprint.pop("device")
            record = Progress(out_path, fingerprint, cfg.resume)
            done_before, kept = record.done()
            outcomes.update(done_before)
            parts.append(kept)
        todo = [s for s in specs if (s.scene, s.tile_id) not in outcomes]
        chunk = engine.TILES_PER_CHUNK_BATCHES * (info.batch or cfg.batch_size)
        with tqdm(total=len(todo), unit="tile", desc="detect", disable=not cfg.progress,
                  dynamic_ncols=True) as bar:
            for result in engine.run_tiles(actors, todo, chunk):
                if record is not None:
                    record.record(result)
                parts.append(result.detections)
                for o in result.tiles:
                    outcomes[(o.scene, o.tile_id)] = o
                for k, v in result.seconds.items():
                    seconds[k] += v
                if result.provider:
                    used.add(result.provider)
                bar.update(len(result.tiles))

    t = time.perf_counter()
    merged = Detections.concat(parts)
    merged = merge_detections(merged, cfg.merge, eff.iou, cfg.ios, not cfg.class_agnostic,
                              cores=_cores_of(merged, specs)).sorted()
    seconds["merge"] = time.perf_counter() - t
    per_scene = [_detection_frame(merged.take(merged.scene_ids == i), scene, info)
                 for i, scene in enumerate(scene_infos)]
    detection_layers = _by_crs(per_scene, scene_infos, DETECTIONS_LAYER, out_crs)
    result = pd.concat([f.to_crs(out_crs or scene_infos[0].crs_wkt) for f in per_scene],
                       ignore_index=True)
    statuses = [o.status for o in outcomes.values()]
    run = {
        "geodet_version": __version__,
        "started_utc": started.isoformat(timespec="seconds"),
        "model": info.path, "model_sha256": info.sha256, "layout": eff.layout,
        "classes": json.dumps({str(k): v for k, v in info.names.items()}),
        "settings": json.dumps(eff.sources),
        "parameters": json.dumps(parameters),
        "scenes": json.dumps([s.path for s in scene_infos]),
        "execution_providers": json.dumps(sorted(used or set(providers))),
        "workers": n_actors,
        "tiles_total": len(specs), "tiles_done": statuses.count("done"),
        "tiles_empty": statuses.count("empty"), "tiles_failed": statuses.count("failed"),
        "detections": len(result),
    }

    def stamp() -> None:
        run.update(seconds_total=round(time.perf_counter() - t0, 3),
                   finished_utc=datetime.now(UTC).isoformat(timespec="seconds"),
                   **{f"seconds_{k}": round(v, 3) for k, v in seconds.items()})

    if out_path is not None:
        t = time.perf_counter()
        tiles = _by_crs([_tile_frame(scene, [s for s in specs if s.scene == i], outcomes)
                         for i, scene in enumerate(scene_infos)], scene_infos, TILES_LAYER,
                        out_crs)
        names = sorted(set(info.names.values()) | set(result["class_name"]))
        stamp()
        write_geopackage(out_path, detection_layers, tiles, run, names)
        record.finish()
        seconds["write"] = time.perf_counter() - t
    stamp()
    result.attrs["geodet"] = run
    return result
