"""`geodet.detect`: the pipeline, as the data flows.

prepare (`geodet.job`: check every input, plan the tiles) -> execute (`geodet.engine`:
read, infer, decode on Ray actors, each chunk recorded for resume by `geodet.resume`)
-> merge (`geodet.merge`) -> layers (`geodet.layers`: georeferenced frames) -> run
record (`geodet.provenance`) -> write (`geodet.write`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import geopandas as gpd

from geodet import engine, layers
from geodet.detections import ChunkResult, Detections
from geodet.incremental import Previous
from geodet.job import Job, PathLike, prepare
from geodet.lock import output_lock
from geodet.merge import merge
from geodet.options import Options
from geodet.progress import Reporter
from geodet.provenance import detection_settings, fingerprint, run_record
from geodet.resume import ResumeRecord
from geodet.storage import is_url
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
    local = out is not None and not is_url(out)  # an OS lock is local
    with output_lock(Path(out) if local else None):  # one writer per output
        return _detect(scenes, model, out, parsed, started)


def _detect(scenes: PathLike | Sequence[PathLike], model: PathLike, out: PathLike | None,
            options: Options, started: datetime) -> gpd.GeoDataFrame:
    job, previous = _prepare(scenes, model, out, options)
    # An incremental run may drop a crashed night's record: its scenes are still new.
    with (ResumeRecord(job.out, fingerprint(job), job.options.resume,
                       job.options.overwrite or job.options.incremental) as record,
          Reporter(job.options) as report):
        resumed = record.done([len(g) for g in job.grids])
        report.start(job, job.n_todo(resumed.done))

        def on_chunk(result: ChunkResult) -> None:
            record.add(result)
            report.update(result)

        execution = engine.execute(job.model, job.settings, job.options,
                                   job.todo(resumed.done), on_chunk)
        t = time.perf_counter()
        found = Detections.concat([resumed.detections, execution.detections])
        # An incremental mosaic merges its tiles' detections with the output's near them.
        join = (previous.join_mosaic(job, found)
                if previous is not None and job.mosaic is not None else None)
        merged = join.detections if join is not None else merge(
            found, job.options.merge, job.settings.iou, job.options.ios,
            not job.options.class_agnostic,
            cores=job.cores(found.scene_ids, found.tile_ids)).sorted()
        merge_seconds = time.perf_counter() - t
        frames = layers.detection_frames(job, merged)
        result = layers.result_frame(job, frames)
        result.attrs["geodet"] = run = run_record(job, execution, resumed.count, len(result),
                                                  started, merge_seconds)
        if job.out is not None:
            new = (layers.detection_layers(job, frames),
                   layers.tile_layers(job, record, first_id=join.first_id if join else 0))
            if join is not None:
                detections, tiles, runs, tables = previous.extend_mosaic(
                    job, join, *new, run, record.failed_tiles(0))
            elif previous is not None:
                detections, tiles, runs, tables = previous.extend(
                    job.refs, layers.scene_names(job), *new, run, record.failed_scenes())
            else:
                detections, tiles, runs, tables = (*new, [run], {})
            write_geopackage(job.out, detections, tiles, runs,
                             sorted({*job.settings.model.names.values(),
                                     *result["class_name"]}), tables)
            record.finish()
        report.finish(run, None if job.out is None else str(job.out))
    return result


def plan(scenes: PathLike | Sequence[PathLike], model: PathLike,
         out: PathLike | None = None, **options: Any) -> Job:
    """Check every input and plan the run as `detect` would, without running or
    writing anything (``geodet detect --dry-run``); ``plan(...).plan()`` describes it.
    With ``incremental``, the job holds only the scenes that the run would process."""
    return _prepare(scenes, model, out, Options.parse(**options))[0]


def _prepare(scenes: PathLike | Sequence[PathLike], model: PathLike, out: PathLike | None,
             options: Options) -> tuple[Job, Previous | None]:
    """The job; for an incremental run also the output it extends (checked)."""
    previous = None
    if options.incremental and out is not None:
        previous = Previous.read(os.fspath(out) if is_url(out) else Path(out))
    job = prepare(scenes, model, out, options, select=previous.select if previous else None)
    if previous is not None:
        previous.check(detection_settings(job), job.out)
        previous.check_mosaic(job)
    return job, previous
