"""What a run records about itself: the `geodet_runs` row and the resume fingerprint."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from geodet import __version__
from geodet.decode import REDUCIBLE
from geodet.detections import TileStatus
from geodet.engine import Execution
from geodet.job import Job
from geodet.model import CUDA, TENSORRT, describe_providers
from geodet.preprocess import feeds_uint8


def parameters(job: Job) -> dict:
    """The effective parameters of a run, as stored in ``geodet_runs.parameters``."""
    s, o = job.settings, job.options
    return {
        "tiles": [list(t) for t in s.tiles], "input_size": list(s.input_size),
        "overlap": s.overlap, "conf": s.conf, "iou": s.iou, "gsd": s.gsd,
        "merge": o.merge, "ios": o.ios, "class_agnostic": o.class_agnostic,
        "batch_size": o.batch_size, "device": o.device, "trt": o.trt,
        "bands": [list(sc.bands) for sc in s.scenes], "min_valid": o.min_valid,
        "value_range": [[list(r) for r in sc.value_range] if sc.value_range else None
                        for sc in s.scenes],
        "scene_gsd": [list(sc.gsd) if sc.gsd else None for sc in s.scenes]}


def fingerprint(job: Job) -> dict:
    """What must be equal for a progress record to be resumed: the model, the scenes
    and every parameter that changes detections (not how fast they are computed)."""
    changes_results = {k: v for k, v in parameters(job).items()
                       if k not in ("batch_size", "device", "trt")}
    s = job.settings
    return {"model": s.model.sha256, "scenes": [sc.path for sc in s.scenes],
            "layout": s.layout, "mean": s.mean, "std": s.std, **changes_results}


def detection_settings(job: Job) -> dict:
    """What must be equal for an incremental run to extend an output: the model and
    every setting that changes detections, whatever the scenes."""
    s, o = job.settings, job.options
    return {"model": s.model.sha256, "layout": s.layout, "mean": s.mean, "std": s.std,
            "input_size": list(s.input_size), "overlap": s.overlap, "conf": s.conf,
            "iou": s.iou, "gsd": s.gsd, "tile_size": o.tile_size, "bands": o.bands,
            "merge": o.merge, "ios": o.ios, "class_agnostic": o.class_agnostic,
            "scale": o.scale, "min_valid": o.min_valid, "out_crs": o.out_crs,
            **({"mosaic": True} if o.mosaic else {})}  # absent: outputs made before it


def on_device(job: Job, execution: Execution) -> list[str]:
    """What a GPU did besides the model (`geodet.detector.TileDetector`): scaling
    8-bit input, reducing a dense YOLO output."""
    s = job.settings
    if not {CUDA, TENSORRT} & set(execution.providers):
        return []
    return [note for note, done in (
        ("input fed as uint8, scaled on the device", feeds_uint8(s.scenes, s.model)),
        ("output reduced to each candidate's best class on the device",
         s.layout in REDUCIBLE)) if done]


def run_record(job: Job, execution: Execution, resumed: int, detections: int,
               started: datetime, merge_seconds: float) -> dict:
    """The run's ``geodet_runs`` row: provenance, tile counts (``resumed`` tiles were
    done by an interrupted run of the same job) and timings (read and infer summed
    over the detectors; the total is wall time up to now)."""
    s, now = job.settings, datetime.now(UTC)
    seconds = {**execution.seconds, "merge": merge_seconds}
    counts = execution.counts
    return {
        "geodet_version": __version__,
        "started_utc": started.isoformat(timespec="seconds"),
        "model": s.model.path, "model_sha256": s.model.sha256, "layout": s.layout,
        "classes": json.dumps({str(k): v for k, v in s.model.names.items()}),
        "settings": json.dumps(s.sources),
        "configuration": json.dumps(job.options.model_dump(mode="json")),
        "detection_settings": json.dumps(detection_settings(job)),
        "parameters": json.dumps(parameters(job)),
        "scenes": json.dumps([sc.path for sc in s.scenes]),
        "execution_providers": json.dumps(list(execution.providers)),
        "provider_options": "; ".join([describe_providers(execution.providers,
                                                          job.options.trt, s),
                                       *on_device(job, execution)]),
        "workers": execution.workers,
        "engine": execution.engine,
        "tiles_total": job.n_tiles,
        "tiles_done": resumed + counts.get(TileStatus.DONE, 0),
        "tiles_empty": job.n_empty,
        "tiles_failed": counts.get(TileStatus.FAILED, 0),
        "detections": detections,
        "seconds_total": round((now - started).total_seconds(), 3),
        "finished_utc": now.isoformat(timespec="seconds"),
        **{f"seconds_{k}": round(v, 3) for k, v in seconds.items()},
    }
