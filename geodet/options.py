"""Every option of a detection run, declared once.

`Options` is the one source of names, types, ranges, defaults and help texts. The
Python API (`geodet.detect(..., **options)`) validates its keyword arguments with
it, and the CLI builds its flags from it (`geodet.cli`), so an option is added here
and in the stage that uses it, nowhere else. Values may arrive as Python values or
as the strings of a command line: pydantic converts and checks both alike.

Options that the model's metadata may set (``conf``, ``iou``, ``overlap``...) are
None by default; `geodet.settings.resolve` fills them from the metadata, else from
their declared ``fallback``.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from geodet.decode import DECODERS
from geodet.errors import InputError
from geodet.merge import Strategy


def option(default: Any, help: str, *, fallback: Any = None, shown: str | None = None,
           short: str | None = None, **checks: Any) -> Any:
    """A declared option: its default, help text and checks (pydantic's ``ge``...).

    ``fallback``: the value used when neither the user nor the model's metadata sets
    it. ``shown``: how the default is described in the help, when it is not a value.
    ``short``: a one-letter flag besides the long one (``-q``).
    """
    extra = {k: v for k, v in (("fallback", fallback), ("shown", shown), ("short", short))
             if v is not None}
    return Field(default, description=help, json_schema_extra=extra or None, **checks)


class Options(BaseModel):
    """The options of `geodet.detect` and `geodet detect`; checked on creation."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tile_size: int | None = option(
        None, "tile width in scene pixels, resampled to the model's input; the height "
        "follows the input's aspect (instead of --gsd)", fallback=640,
        shown="the model's input size, or the tile that gives the model its ground "
        "resolution", ge=16, le=16384)
    gsd: float | None = option(
        None, "ground resolution the model was trained at, in metres per pixel: tiles "
        "are resampled on the fly so that the model sees it",
        shown="model metadata, else the scene's own", gt=0, le=10000)
    overlap: float | None = option(
        None, "overlap of neighbouring tiles, as a fraction of the tile; objects smaller "
        "than the overlap are never cut in two", fallback=0.2, ge=0, lt=1)
    conf: float | None = option(None, "minimum score", fallback=0.25, ge=0, le=1)
    iou: float | None = option(
        None, "boxes of one class overlapping more than this (intersection over union) "
        "are duplicates", fallback=0.5, gt=0, le=1)
    merge: Strategy = option(
        "ownership", "how duplicates across tile overlaps are resolved: ownership (each "
        "tile keeps the objects centred in its core, then a seam pass), nms (global IoU "
        "suppression) or nmm (merging on intersection over the smaller box, as SAHI)")
    ios: float = option(
        0.5, "intersection over the smaller box above which pieces of one object are "
        "united (seam pass, nmm)", gt=0, le=1)
    class_agnostic: bool = option(False, "boxes of different classes may suppress each "
                                  "other")
    batch_size: int = option(8, "tiles per inference call (models with a fixed batch use "
                             "theirs)", ge=1, le=1024)
    workers: int | None = option(None, "number of detector processes",
                                 shown="one per GPU, or one per 4 CPU cores", ge=1, le=4096)
    readers: int | None = option(
        None, "threads per detector that read and decode tiles ahead of the model",
        shown="the CPUs of a GPU detector, else 1", ge=1, le=256)
    device: Literal["auto", "cpu", "cuda"] = option(
        "auto", "auto: GPUs where the Ray cluster has them or its autoscaler declares GPU "
        "nodes, else CPU; cuda: GPUs only, waiting for an autoscaler to add GPU nodes "
        "(see --wait-timeout), failing at once where none can come")
    trt: bool = option(
        False, "on GPUs, run the model with NVIDIA TensorRT first, in fp16 (CUDA runs what "
        "TensorRT cannot): engines are built on the first run (minutes) and cached per "
        "model in GEODET_TRT_CACHE, else ~/.cache/geodet/trt, on each node; where TensorRT "
        "cannot start, the CUDA provider runs, with a warning")
    bands: tuple[Annotated[int, Field(ge=1)], ...] | None = option(
        None, "bands fed to the model, in order, for example 1,2,3 or 3,2,1 for a BGR "
        "model", shown="all but alpha", min_length=1)
    scale: tuple[float, ...] | None = option(
        None, "integer or float values mapped to the model's 0..1: MIN,MAX for all bands, "
        "or one MIN,MAX pair per band, for example 0,4095 for 12-bit data",
        shown="the bit depth the scene declares (NBITS), else 0..255 for 8-bit data, else "
        "the smallest bit depth that holds the scene's largest value; float data as is",
        min_length=2)
    min_valid: float = option(
        0.5, "detections whose box holds less than this fraction of valid pixels (not "
        "nodata, alpha or masked) are dropped", ge=0, le=1)
    mosaic: bool = option(False, "treat all given files (same CRS, resolution and bands) "
                          "as one scene, so objects on file borders are found once")
    layout: Literal[tuple(DECODERS)] | None = option(  # type: ignore[valid-type]
        None, "the model's output layout, when geodet cannot tell it", shown="detected")
    out_crs: str | None = option(
        None, "reproject all detections and tiles to this CRS, for example EPSG:4326",
        shown="each scene's own, one layer per CRS if they differ")
    overwrite: bool = option(False, "replace an existing output")
    incremental: bool = option(
        False, "extend an existing output: run only the scenes it lacks or that changed "
        "since (size, modification time or ETag), keep the rest; with --mosaic, the "
        "tiles over the files it lacks or that changed")
    resume: bool = option(False, "continue an interrupted run of the same command from "
                          "its progress file (OUT.gpkg.progress)")
    engine: Literal["auto", "threads", "ray"] = option(
        "auto", "where the detectors run: threads (of this process, without Ray: one "
        "machine, no start-up cost) or ray (actors of a Ray cluster: a private local one "
        "unless --address or RAY_ADDRESS names one); auto: threads on a machine without "
        "a GPU when no cluster is named, else ray")
    address: str | None = option(None, "Ray cluster to join: auto, or HOST:PORT",
                                 shown="RAY_ADDRESS if set, else a private local cluster")
    wait_timeout: float = option(
        600, "seconds to wait for the Ray cluster to place the detectors (an autoscaler "
        "adding GPU nodes) before giving up", gt=0, le=86400)
    progress: bool = option(True, "show progress: a bar on a terminal, else a line every "
                            "--progress-every seconds")
    progress_every: float = option(5.0, "seconds between progress lines or events when "
                                   "there is no terminal", gt=0, le=3600)
    log_format: Literal["text", "json"] = option(
        "text", "json: every line on stderr is one JSON object (start, progress, warnings, "
        "the final counts), for schedulers and log collectors")
    quiet: bool = option(False, "errors only: no progress, no warnings, no summary",
                         short="-q")
    asset: str | None = option(None, "the asset of each STAC item to read, for example "
                               "visual", shown="the item's only GeoTIFF asset")

    @field_validator("bands", "scale", mode="before")
    @classmethod
    def _comma_list(cls, value: Any) -> Any:
        """``"1,2,3"`` (a command line) -> ``[1, 2, 3]``."""
        return value.split(",") if isinstance(value, str) else value

    @field_validator("scale")
    @classmethod
    def _ranges(cls, value: tuple[float, ...] | None) -> tuple[float, ...] | None:
        """MIN,MAX pairs of finite numbers, each MIN below its MAX."""
        if value is None:
            return value
        if len(value) % 2:
            raise ValueError("give MIN,MAX, or one MIN,MAX pair per band")
        for lo, hi in zip(value[::2], value[1::2], strict=True):
            if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
                raise ValueError(f"each MIN must be a number below its MAX ({lo}, {hi})")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Options:
        """Options that contradict each other."""
        if self.trt and self.device == "cpu":
            raise ValueError("--trt runs TensorRT on GPUs, but --device cpu asks for none: "
                             "leave out --trt, or give --device auto or cuda")
        if self.engine == "threads" and self.address:
            raise ValueError("--engine threads runs without Ray, but --address names a Ray "
                             "cluster: leave out one of them (--engine ray joins it)")
        return self

    @classmethod
    def parse(cls, **values: Any) -> Options:
        """Options from keyword values; anything invalid is one `InputError` line."""
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            where = ".".join(str(p) for p in first["loc"] if isinstance(p, str))
            name = where.replace("_", "-") or "option"
            if first["type"] == "extra_forbidden":
                raise InputError(f"unknown option {name}: the options are "
                                 f"{', '.join(n.replace('_', '-') for n in cls.model_fields)}"
                                 ) from None
            if not where and first["type"] == "value_error":  # options that contradict
                raise InputError(str(first["ctx"]["error"])) from None
            what = "unknown" if first["type"] == "literal_error" else "invalid"
            raise InputError(f"{what} {name}: {first['msg']} "
                             f"(got {first.get('input')!r})") from None

    @classmethod
    def fallback(cls, name: str) -> Any:
        """The declared value of ``name`` when neither the user nor the model sets it."""
        return (cls.model_fields[name].json_schema_extra or {}).get("fallback")


def describe_default(info: FieldInfo) -> str:
    """The default of an option as the help shows it ("" for flags)."""
    extra = info.json_schema_extra or {}
    if "shown" in extra:
        return str(extra["shown"])
    if "fallback" in extra:
        return f"model metadata, else {extra['fallback']}"
    return "" if info.default is None or isinstance(info.default, bool) else str(info.default)
