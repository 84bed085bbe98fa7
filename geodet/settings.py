"""Effective run settings: command line over model metadata over built-in defaults,
each recorded with where it came from."""

from __future__ import annotations

from dataclasses import dataclass

from geodet.config import DetectConfig
from geodet.decode import DECODERS, detect_layout
from geodet.errors import InputError
from geodet.model import ModelInfo
from geodet.raster import SceneInfo

DEFAULTS = {"conf": 0.25, "iou": 0.5, "overlap": 0.2, "tile_size": 640}
MIN_TILE = 16


@dataclass(frozen=True)
class Resolved:
    layout: str
    conf: float
    iou: float
    overlap: float
    gsd: float | None  # metres per pixel the model sees; None: the scenes' own
    model_tile: tuple[int, int]  # (w, h) pixels per tile as the model sees them
    tiles: tuple[tuple[int, int], ...]  # (w, h) scene pixels per tile, per scene
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    sources: dict[str, dict]  # name -> {"value", "source"}


def resolve(cfg: DetectConfig, model: ModelInfo, scenes: list[SceneInfo]) -> Resolved:
    """Work out every setting of a run, raising `InputError` for contradictions."""
    sources: dict[str, dict] = {}

    def pick(name: str, cli_value):
        if cli_value is not None:
            value, source = cli_value, "command line"
        elif name in model.declared:
            value, key = model.declared[name]
            source = f"model metadata {key}"
        elif name in DEFAULTS:
            value, source = DEFAULTS[name], "default"
        else:
            value, source = None, "none"
        sources[name] = {"value": value, "source": source}
        return value

    if cfg.layout is not None:
        if cfg.layout not in DECODERS:
            raise InputError(f"unknown layout {cfg.layout!r}: choose one of "
                             f"{', '.join(DECODERS)}")
        layout, how = cfg.layout, "command line"
    else:
        layout, how = detect_layout(model)
    sources["layout"] = {"value": layout, "source": how}
    conf, iou, overlap = pick("conf", cfg.conf), pick("iou", cfg.iou), pick("overlap",
                                                                              cfg.overlap)
    for name, value in (("conf", conf), ("iou", iou), ("overlap", overlap)):
        if not (0 <= value < 1 if name == "overlap" else 0 <= value <= 1):
            raise InputError(f"model metadata gives {name} = {value}, out of range: set "
                             f"--{name}")
    if cfg.gsd is not None and cfg.tile_size is not None:
        raise InputError("give --gsd or --tile-size, not both: with --gsd the tile size "
                         "follows from the model's input")
    gsd = None if cfg.tile_size is not None else pick("gsd", cfg.gsd)

    fixed = (model.width, model.height)
    if cfg.tile_size is not None:  # scene pixels, resampled to a fixed input
        model_tile = (model.width or cfg.tile_size, model.height or cfg.tile_size)
        # The tile's height follows the input's aspect: images are scaled uniformly,
        # never stretched.
        side = (cfg.tile_size, max(MIN_TILE, round(cfg.tile_size * model_tile[1]
                                                   / model_tile[0])))
        tiles = tuple(side for _ in scenes)
        sources["tile_size"] = {"value": cfg.tile_size, "source": "command line"}
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
    return Resolved(layout=layout, conf=conf, iou=iou, overlap=overlap, gsd=gsd,
                    model_tile=model_tile, tiles=tiles, mean=mean, std=std, sources=sources)


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
