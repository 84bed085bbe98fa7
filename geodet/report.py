"""`geodet report`: what a geodet GeoPackage holds, in numbers and in a quick-look.

The numbers: per run (a row of ``geodet_runs``) the model, the execution provider,
the tile counts and the time; per scene and class the number of detections and a
summary of their scores; the failed tiles with their errors.

The quick-look draws each scene of the run small, with the detections outlined in
their class's colour (the colours of the QGIS style) and failed tiles tinted red. A
scene is read from its overviews, so a gigapixel scene draws in seconds; a scene
without overviews is read whole by GDAL to shrink it (slow on large scenes: build
overviews with ``gdaladdo``). The picture is drawn with rasterio (rasterize) and
written with GDAL's PNG driver: no extra dependency.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyogrio
import rasterio
import shapely
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError
from rasterio.features import rasterize

from geodet.errors import InputError
from geodet.styles import FAILED_RGB, class_colours
from geodet.write import DETECTIONS_LAYER, RUNS_TABLE, TILES_LAYER, check_local_file

log = logging.getLogger("geodet")

QUICKLOOK_SIDE = 2048  # default longest side of a scene in the quick-look, in pixels
PANEL_GAP = 16  # white pixels between the scenes of a quick-look
FAILED_TINT = 0.4  # opacity of the red over failed tiles
FAILED_LISTED = 20  # failed tiles listed in the text report
FEATURE_BATCH = 20_000  # features read at a time to draw them


@dataclass(frozen=True)
class GeodetOutput:
    """An opened geodet GeoPackage: its runs and its spatial layers."""

    path: str
    runs: list[dict]
    detection_layers: list[str]
    tile_layers: list[str]

    @classmethod
    def open(cls, path: str | os.PathLike) -> GeodetOutput:
        """Check that ``path`` is a geodet output, raising `InputError` if not."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise InputError(f"file not found: {path}: give a GeoPackage written by "
                             "geodet detect")
        try:
            layers = [str(name) for name, _ in pyogrio.list_layers(path)]
        except Exception:
            raise InputError(f"cannot read {path} as a GeoPackage: give one written by "
                             "geodet detect") from None
        if RUNS_TABLE not in layers:
            raise InputError(f"{path} is not a geodet output (it has no {RUNS_TABLE} "
                             "table): give a GeoPackage written by geodet detect")
        runs = pyogrio.read_dataframe(path, layer=RUNS_TABLE)

        def named(base: str) -> list[str]:  # `base`, or `base_epsg_32633`... per CRS
            return [name for name in layers if re.fullmatch(rf"{base}(_\w+)?", name)]

        return cls(path, runs.to_dict("records"), named(DETECTIONS_LAYER), named(TILES_LAYER))

    def scenes(self) -> list[str]:
        """The paths of the scenes of all runs, in order, each once."""
        paths = [p for run in self.runs for p in json.loads(run.get("scenes") or "[]")]
        return list(dict.fromkeys(paths))

    def class_names(self) -> list[str]:
        """The class names as the detections style lists them (so colours match): the
        model's, and any other found in the detections."""
        declared = {v for run in self.runs for v in json.loads(run.get("classes") or "{}")
                    .values()}
        found = {str(c) for layer in self.detection_layers
                 for c in pyogrio.read_dataframe(
                     self.path, sql=f'SELECT DISTINCT class_name FROM "{layer}"')["class_name"]}
        return sorted(declared | found)

    def table(self, layers: list[str], columns: list[str]) -> pd.DataFrame:
        """``columns`` of ``layers`` in one frame, without geometry, with a ``layer``
        column."""
        frames = [pyogrio.read_dataframe(self.path, layer=layer, columns=columns,
                                         read_geometry=False, use_arrow=True)
                  .assign(layer=layer) for layer in layers]
        return (pd.concat(frames, ignore_index=True) if frames
                else pd.DataFrame(columns=[*columns, "layer"]))

    def features(self, layers: list[str], column: str, where: str,
                 crs: CRS) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches of (geometries in ``crs``, values of ``column``) of the rows of
        ``layers`` matching ``where`` (SQL): memory bounded by the batch, not the layer."""
        for layer in layers:
            with pyogrio.open_arrow(self.path, layer=layer, columns=[column], where=where,
                                    batch_size=FEATURE_BATCH, use_pyarrow=True) as (meta,
                                                                                    batches):
                reproject = _reprojection(meta["crs"], crs)
                geometry = meta["geometry_name"] or "wkb_geometry"
                for batch in batches:
                    wkb = batch.column(geometry).to_numpy(zero_copy_only=False)
                    yield (reproject(shapely.from_wkb(wkb)),
                           batch.column(column).to_numpy(zero_copy_only=False))


def _reprojection(source: str | None, target: CRS) -> Callable[[np.ndarray], np.ndarray]:
    """A function taking geometries from ``source`` to ``target`` (no-op if equal)."""
    if source is None or CRS.from_user_input(source) == target:
        return lambda geoms: geoms
    transformer = Transformer.from_crs(source, target.to_wkt(), always_xy=True)
    return lambda geoms: shapely.transform(
        geoms, lambda xy: np.column_stack(transformer.transform(xy[:, 0], xy[:, 1])))


def _scene_name(path: str) -> str:
    """The name the detections' ``scene`` column holds for a scene path."""
    return os.path.basename(path.rstrip("/")) or path


def _score_summary(scores: pd.Series) -> dict:
    return {"count": len(scores), "score_min": float(scores.min()),
            "score_median": float(scores.median()), "score_mean": float(scores.mean()),
            "score_max": float(scores.max())}


def summarise(path: str | os.PathLike) -> dict:
    """The report on a geodet GeoPackage as plain data (what ``--json`` prints)."""
    out = GeodetOutput.open(path)
    dets = out.table(out.detection_layers, ["scene", "class_name", "score"])
    tiles = out.table(out.tile_layers, ["scene", "tile_id", "status", "error"])
    runs = [{
        "started_utc": run.get("started_utc"), "finished_utc": run.get("finished_utc"),
        "geodet_version": run.get("geodet_version"), "model": run.get("model"),
        "model_sha256": run.get("model_sha256"),
        "providers": json.loads(run.get("execution_providers") or "[]"),
        "provider_options": (run.get("provider_options")  # None: an older geodet
                             if isinstance(run.get("provider_options"), str) else None),
        "workers": run.get("workers"), "detections": run.get("detections"),
        "tiles": {k.removeprefix("tiles_"): int(v) for k, v in run.items()
                  if k.startswith("tiles_") and pd.notna(v)},
        "seconds": {k.removeprefix("seconds_"): float(v) for k, v in run.items()
                    if k.startswith("seconds_") and pd.notna(v)},
    } for run in out.runs]
    names = list(dict.fromkeys([*map(_scene_name, out.scenes()), *dets["scene"]]))
    scenes = [{"scene": name, "detections": int((dets["scene"] == name).sum()),
               "classes": {str(cls): _score_summary(group["score"]) for cls, group in
                           dets[dets["scene"] == name].groupby("class_name", sort=True)}}
              for name in names]
    failed = tiles[tiles["status"] == "failed"].sort_values(["layer", "scene", "tile_id"])
    return {"file": out.path, "runs": runs, "scenes": scenes,
            "failed_tiles": [{"layer": r.layer, "scene": r.scene, "tile_id": int(r.tile_id),
                              "error": r.error} for r in failed.itertuples()]}


def format_summary(summary: dict) -> str:
    """The report as text for people."""
    lines = [f"{summary['file']}: {len(summary['runs'])} run(s)"]
    for run in summary["runs"]:
        tiles = run["tiles"]
        counts = ", ".join(f"{tiles[k]} {k}" for k in ("done", "empty", "skipped", "failed")
                           if k in tiles)
        lines += [f"run started {run['started_utc']} (geodet {run['geodet_version']}): model "
                  f"{run['model']} (sha256 {str(run['model_sha256'])[:12]}) on "
                  f"{', '.join(run['providers'])}, {run['workers']} worker(s)",
                  f"  {tiles.get('total', 0)} tiles ({counts}), {run['detections']} "
                  f"detections in {run['seconds'].get('total', float('nan')):.1f} s"]
    lines += ["", f"{'scene':<24} {'class':<16} {'count':>8} {'score min':>9} "
              f"{'median':>7} {'mean':>7} {'max':>7}"]
    for scene in summary["scenes"]:
        if not scene["classes"]:
            lines.append(f"{scene['scene'][:24]:<24} {'-':<16} {0:>8}")
        for cls, s in scene["classes"].items():
            lines.append(f"{scene['scene'][:24]:<24} {cls[:16]:<16} {s['count']:>8} "
                         f"{s['score_min']:>9.3f} {s['score_median']:>7.3f} "
                         f"{s['score_mean']:>7.3f} {s['score_max']:>7.3f}")
    failed = summary["failed_tiles"]
    lines += ["", f"failed tiles: {len(failed)}"]
    lines += [f"  {t['scene']} tile {t['tile_id']}: {t['error']}"
              for t in failed[:FAILED_LISTED]]
    if len(failed) > FAILED_LISTED:
        lines.append(f"  ... and {len(failed) - FAILED_LISTED} more (--json lists them all)")
    return "\n".join(lines)


def _shrunk_image(ds: rasterio.DatasetReader, shape: tuple[int, int]) -> np.ndarray:
    """The scene's first three bands (or its first, as grey) at ``shape``, as uint8 RGB,
    read from the overviews where the scene has them."""
    bands = [1, 2, 3] if ds.count >= 3 else [1, 1, 1]
    if not ds.overviews(1) and shape[0] < ds.height:
        log.warning("%s has no overviews: drawing it reads every pixel (slow on large "
                    "scenes; build them with gdaladdo)", ds.name)
    try:
        data = ds.read(bands, out_shape=(3, *shape), resampling=Resampling.average,
                       masked=True)
    except RasterioIOError as e:  # e.g. the corrupt block that made tiles fail
        log.warning("cannot read the pixels of %s (%s): drawn grey", ds.name,
                    str(e).splitlines()[0])
        return np.full((3, *shape), 128, np.uint8)
    if data.dtype != np.uint8:  # stretch 2-98 % of the valid pixels of each band
        low, high = np.nanpercentile(data.filled(np.nan).reshape(3, -1).astype(float),
                                     [2, 98], axis=1)
        span = np.where(high > low, high - low, 1)
        data = (data - low[:, None, None]) / span[:, None, None] * 255
    return np.clip(data.filled(0), 0, 255).astype(np.uint8)


def _outline_pixels(geoms: np.ndarray, transform: Affine,
                    shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The pixels (rows, cols) of a ``shape`` grid that the exterior rings of polygons
    cross, sampled every half pixel along each edge, and which polygon each belongs to.
    Vectorised: rasterize would walk every ring in Python."""
    xy, which = shapely.get_coordinates(shapely.get_exterior_ring(geoms), return_index=True)
    inverse = ~transform
    cols = inverse.a * xy[:, 0] + inverse.b * xy[:, 1] + inverse.c
    rows = inverse.d * xy[:, 0] + inverse.e * xy[:, 1] + inverse.f
    edge = which[1:] == which[:-1]  # consecutive vertices of one ring
    c0, r0, c1, r1 = cols[:-1][edge], rows[:-1][edge], cols[1:][edge], rows[1:][edge]
    samples = np.ceil(2 * np.hypot(c1 - c0, r1 - r0)).astype(np.int64) + 1
    of = np.repeat(np.arange(len(samples)), samples)  # the edge of each sample
    t = (np.arange(len(of)) - np.repeat(np.cumsum(samples) - samples, samples)) / \
        np.repeat(np.maximum(samples - 1, 1), samples)
    col = np.floor(c0[of] + t * (c1 - c0)[of]).astype(np.int64)
    row = np.floor(r0[of] + t * (r1 - r0)[of]).astype(np.int64)
    inside = (row >= 0) & (row < shape[0]) & (col >= 0) & (col < shape[1])
    return row[inside], col[inside], which[:-1][edge][of][inside]


def _burn(batches: Iterable[tuple[np.ndarray, np.ndarray]], shape: tuple[int, int],
          transform: Affine, outline: bool,
          value: Callable[[object], int] = lambda _: 1) -> tuple[np.ndarray, int]:
    """A ``shape`` grid with ``value(v)`` burnt where each polygon (or its outline)
    lies, later ones over earlier ones, and how many polygons there were."""
    grid, count = np.zeros(shape, np.uint16), 0
    for geoms, values in batches:
        if not len(geoms):
            continue
        burnt = np.fromiter(map(value, values), np.uint16, len(values))
        if outline:
            rows, cols, which = _outline_pixels(geoms, transform, shape)
            grid[rows, cols] = burnt[which]
        else:
            rasterize(zip(geoms, burnt, strict=True), out=grid, transform=transform)
        count += len(geoms)
    return grid, count


def _draw_scene(out: GeodetOutput, path: str, max_side: int,
                colours: dict[str, tuple[int, int, int]]) -> tuple[np.ndarray, dict]:
    """One scene's panel, ``(3, rows, cols)`` uint8, and what was drawn on it."""
    try:
        ds = rasterio.open(path)
    except RasterioIOError as e:
        raise InputError(f"cannot open the scene {path} of this run to draw it: "
                         f"{str(e).splitlines()[0]}") from None
    with ds:
        scale = max(1.0, max(ds.width, ds.height) / max_side)
        shape = (max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        image = _shrunk_image(ds, shape)
        transform = ds.transform @ Affine.scale(ds.width / shape[1], ds.height / shape[0])
        name, crs = _scene_name(path), ds.crs
    where = "scene = '{}'".format(name.replace("'", "''"))

    def failed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return out.features(out.tile_layers, "status", f"{where} AND status = 'failed'", crs)

    red = np.array(FAILED_RGB, np.uint8)[:, None]
    tinted, n_failed = _burn(failed(), shape, transform, outline=False)
    tinted = tinted > 0
    image[:, tinted] = (image[:, tinted] * (1 - FAILED_TINT) + red * FAILED_TINT).round()
    image[:, _burn(failed(), shape, transform, outline=True)[0] > 0] = red

    value = {c: i + 1 for i, c in enumerate(colours)}  # class name -> value burnt
    outlines, n_dets = _burn(out.features(out.detection_layers, "class_name", where, crs),
                             shape, transform, outline=True, value=lambda c: value[str(c)])
    lut = np.array([(0, 0, 0), *colours.values()], np.uint8).T  # value -> colour
    drawn = outlines > 0
    image[:, drawn] = lut[:, outlines[drawn]]
    return image, {"scene": name, "path": path, "size": [shape[1], shape[0]],
                   "scale": scale, "detections": n_dets, "failed_tiles": n_failed}


def _mosaic(panels: list[np.ndarray]) -> tuple[np.ndarray, list[list[int]]]:
    """Panels in a near-square grid on white, and the (col, row) of each panel's corner."""
    columns = math.ceil(math.sqrt(len(panels)))
    rows = math.ceil(len(panels) / columns)
    cell_h = max(p.shape[1] for p in panels) + PANEL_GAP
    cell_w = max(p.shape[2] for p in panels) + PANEL_GAP
    picture = np.full((3, rows * cell_h - PANEL_GAP, columns * cell_w - PANEL_GAP), 255,
                      np.uint8)
    corners = []
    for i, panel in enumerate(panels):
        y, x = divmod(i, columns)
        y, x = y * cell_h, x * cell_w
        picture[:, y:y + panel.shape[1], x:x + panel.shape[2]] = panel
        corners.append([x, y])
    return picture, corners


def draw_quicklook(path: str | os.PathLike, png: str | os.PathLike,
                   max_side: int = QUICKLOOK_SIDE) -> list[dict]:
    """Draw every scene of a geodet output into ``png``, each at most ``max_side``
    pixels, with detections and failed tiles, in a grid; returns one record per scene
    (its size and corner in the picture, its scale, what was drawn)."""
    if max_side < 16:
        raise InputError(f"--size must be at least 16 pixels, got {max_side}")
    png = check_local_file(png, ".png", "quick-look", "a PNG file")
    out = GeodetOutput.open(path)
    scenes = out.scenes()
    if not scenes:
        raise InputError(f"{out.path} names no scene in its {RUNS_TABLE} table: nothing "
                         "to draw")
    colours = class_colours(out.class_names())
    panels, drawn = zip(*(_draw_scene(out, scene, max_side, colours) for scene in scenes),
                        strict=True)
    picture, corners = _mosaic(list(panels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(png, "w", driver="PNG", width=picture.shape[2],
                           height=picture.shape[1], count=3, dtype="uint8") as dst:
            dst.write(picture)
    return [{**record, "at": corner} for record, corner in zip(drawn, corners, strict=True)]
