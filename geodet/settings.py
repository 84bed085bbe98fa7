"""Effective run settings: the user's options over model metadata over the declared
fallbacks, each recorded with where it came from."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from geodet.decode import detect_layout
from geodet.errors import InputError
from geodet.model import ModelInfo
from geodet.options import Options
from geodet.scene import SceneInfo

log = logging.getLogger("geodet")

MIN_TILE = 16
#: Where the class scores lie, per layout whose output shape fixes the class count:
#: (output axis, values along it that are not class scores: the box, then an
#: objectness or an angle).
CLASS_AXIS = {"ultralytics": (1, 4), "obb": (1, 5), "yolov5": (2, 5), "detr": (2, 4)}


@dataclass(frozen=True)
class Settings:
    """Everything a detector needs to turn tiles into detections; sent once to each."""

    model: ModelInfo
    scenes: tuple[SceneInfo, ...]
    layout: str
    conf: float
    iou: float
    overlap: float
    gsd: float | None  # metres per pixel the model sees; None: the scenes' own
    input_size: tuple[int, int]  # (w, h) pixels per tile as the model sees them
    tiles: tuple[tuple[int, int], ...]  # (w, h) scene pixels per tile, per scene
    mean: tuple[float, ...] | None  # standardisation after scaling to 0..1
    std: tuple[float, ...] | None
    batch_size: int  # tiles per inference call: the model's fixed batch, else the option
    sources: dict[str, dict]  # name -> {"value", "source"}


def resolve(options: Options, model: ModelInfo, scenes: list[SceneInfo]) -> Settings:
    """Work out every setting of a run, raising `InputError` for contradictions."""
    for s in scenes:
        if len(s.bands) != model.channels:
            raise InputError(
                f"model takes {model.channels} channels but scene {s.path} gives "
                f"{len(s.bands)} (bands {list(s.bands)}): choose bands with --bands, "
                f"for example --bands {','.join(str(b) for b in range(1, model.channels + 1))}"
            )
    sources: dict[str, dict] = {"scale": {
        "value": [None if s.value_range is None else [list(r) for r in s.value_range]
                  for s in scenes],
        "source": [s.range_source for s in scenes]}}

    def pick(name: str, cli_value):
        if cli_value is not None:
            value, source = cli_value, "command line"
        elif name in model.declared:
            value, key = model.declared[name]
            source = f"model metadata {key}"
        elif Options.fallback(name) is not None:
            value, source = Options.fallback(name), "default"
        else:
            value, source = None, "none"
        sources[name] = {"value": value, "source": source}
        return value

    if options.layout is not None:
        layout, how = options.layout, "command line"
    else:
        layout, how = detect_layout(model)
    sources["layout"] = {"value": layout, "source": how}
    _check_class_names(model, layout)
    conf, iou = pick("conf", options.conf), pick("iou", options.iou)
    overlap = pick("overlap", options.overlap)
    for name, value in (("conf", conf), ("iou", iou), ("overlap", overlap)):
        if not (0 <= value < 1 if name == "overlap" else 0 <= value <= 1):
            raise InputError(f"model metadata gives {name} = {value}, out of range: set "
                             f"--{name}")
    if options.gsd is not None and options.tile_size is not None:
        raise InputError("give --gsd or --tile-size, not both: with --gsd the tile size "
                         "follows from the model's input")
    gsd = None if options.tile_size is not None else pick("gsd", options.gsd)

    fixed = (model.width, model.height)
    if options.tile_size is not None:  # scene pixels, resampled to a fixed input
        model_tile = (model.width or options.tile_size, model.height or options.tile_size)
        # The tile's height follows the input's aspect: images are scaled uniformly,
        # never stretched.
        side = (options.tile_size,
                max(MIN_TILE, round(options.tile_size * model_tile[1] / model_tile[0])))
        tiles = tuple(side for _ in scenes)
        sources["tile_size"] = {"value": options.tile_size, "source": "command line"}
    else:
        if None in fixed:
            side = int(pick("tile_size", None))
            model_tile = (model.width or side, model.height or side)
        else:
            model_tile = fixed
            sources["tile_size"] = {"value": list(fixed), "source": "model input"}
        tiles = tuple(_scene_tile(model_tile, gsd, s) for s in scenes)
    mean, std = (model.declared.get(k, (None, ""))[0] for k in ("mean", "std"))
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and len(value) not in (1, model.channels):
            raise InputError(f"model metadata {name} has {len(value)} values for "
                             f"{model.channels} channels")
    return Settings(model=model, scenes=tuple(scenes), layout=layout, conf=conf, iou=iou,
                    overlap=overlap, gsd=gsd, input_size=model_tile, tiles=tiles, mean=mean,
                    std=std, batch_size=model.batch or options.batch_size, sources=sources)


def output_classes(model: ModelInfo, layout: str) -> int | None:
    """How many classes the model's output can produce, where its shape says."""
    if layout not in CLASS_AXIS or len(model.output_shapes) != 1 \
            or len(model.output_shapes[0]) != 3:
        return None
    axis, extra = CLASS_AXIS[layout]
    size = model.output_shapes[0][axis]
    return size - extra if size is not None and size > extra else None


def _check_class_names(model: ModelInfo, layout: str) -> None:
    """Warn when the declared class names cannot be what the outputs produce."""
    produced = output_classes(model, layout)
    if model.names and produced is not None and produced != len(model.names):
        log.warning("model %s declares %d class names but its output (%s layout) has "
                    "%d classes: class names may be wrong; check the model's 'names' "
                    "metadata", model.path, len(model.names), layout, produced)


def _scene_tile(model_tile: tuple[int, int], gsd: float | None,
                scene: SceneInfo) -> tuple[int, int]:
    """Scene pixels per tile so that the model sees ``gsd`` metres per pixel."""
    if gsd is None:
        return model_tile
    if scene.gsd is None:
        raise InputError(f"cannot tell the ground resolution of {scene.path} (its CRS has "
                         "no linear unit): leave out --gsd, or give --tile-size")
    return tuple(max(MIN_TILE, round(m * gsd / g))
                 for m, g in zip(model_tile, scene.gsd, strict=True))
