"""`geodet.detect`: the pipeline, as the data flows.

prepare (`geodet.job`: check every input, plan the tiles) -> execute (`geodet.engine`:
read, infer, decode on Ray actors, each chunk recorded for resume by `geodet.resume`)
-> merge (`geodet.merge`) -> layers (`geodet.layers`: georeferenced frames) -> run
record (`geodet.provenance`) -> write (`geodet.write`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd
from tqdm import tqdm

from geodet import engine, layers, storage
from geodet.detections import ChunkResult, Detections
from geodet.job import PathLike, prepare
from geodet.lock import output_lock
from geodet.merge import merge
from geodet.options import Options
from geodet.provenance import fingerprint, run_record
from geodet.resume import ResumeRecord
from geodet.write import write_geopackage


def detect(scenes: PathLike | Sequence[PathLike], model: PathLike,
           out: PathLike | None = None, **options: Any) -> gpd.GeoDataFrame:
    """Detect objects in georeferenced rasters; optionally write a GeoPackage.

    ``scenes``: paths or GDAL URLs, glob patterns, or .txt/.lst files listing them.
    ``options``: the fields of `geodet.Options` (``conf=0.3``, ``overlap=0.2``...),
    the same as the command's flags; those left out come from the model's metadata,
    else the declared defaults. Returns the detections as a GeoDataFrame (one
    polygon per box) in ``out_crs``, else in the first scene's CRS; with several
    CRSs, the GeoPackage holds one layer per CRS unless ``out_crs`` is given.
    ``result.attrs["geodet"]`` holds the run record also written to the GeoPackage's
    ``geodet_runs`` table (``tiles_failed`` included). Bad input raises
    `geodet.InputError` before anything is started or written.
    """
    started = datetime.now(UTC)
    parsed = Options.parse(**options)
    local = out is not None and not storage.is_url(out)  # an OS lock is local
    with output_lock(Path(out) if local else None):  # one writer per output
        return _detect(scenes, model, out, parsed, started)


def _detect(scenes: PathLike | Sequence[PathLike], model: PathLike, out: PathLike | None,
            options: Options, started: datetime) -> gpd.GeoDataFrame:
    job = prepare(scenes, model, out, options)
    with ResumeRecord(job.out, fingerprint(job), job.options.resume,
                      job.options.overwrite) as record:
        resumed = record.done([len(g) for g in job.grids])
        with tqdm(total=job.n_todo(resumed.done), unit="tile", desc="detect",
                  dynamic_ncols=True, disable=not job.options.progress) as bar:

            def on_chunk(result: ChunkResult) -> None:
                record.add(result)
                bar.update(len(result.tiles))

            execution = engine.execute(job.model, job.settings, job.options,
                                       job.todo(resumed.done), on_chunk)
        t = time.perf_counter()
        found = Detections.concat([resumed.detections, execution.detections])
        merged = merge(found, job.options.merge, job.settings.iou, job.options.ios,
                       not job.options.class_agnostic,
                       cores=job.cores(found.scene_ids, found.tile_ids)).sorted()
        merge_seconds = time.perf_counter() - t
        frames = layers.detection_frames(job, merged)
        result = layers.result_frame(job, frames)
        result.attrs["geodet"] = run = run_record(job, execution, resumed.count, len(result),
                                                  started, merge_seconds)
        if job.out is not None:
            write_geopackage(job.out, layers.detection_layers(job, frames),
                             layers.tile_layers(job, record), run,
                             sorted({*job.settings.model.names.values(),
                                     *result["class_name"]}))
            record.finish()
    return result
