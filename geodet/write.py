"""Writing the GeoPackage: detections, tile outcomes, run provenance, a QGIS style.

Everything goes into a temporary file beside the output, renamed into place only
when complete, so an interrupted run never leaves a half-written GeoPackage. An
output URL (``s3://bucket/key.gpkg``, `geodet.storage`) is written to a local
temporary file and uploaded once complete.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio
from pyogrio.errors import DataLayerError, DataSourceError, FeatureError

from geodet import storage
from geodet.errors import InputError, OutputError
from geodet.styles import GEOMETRY_COLUMN, styles_table

DETECTIONS_LAYER = "detections"
TILES_LAYER = "tiles"
RUNS_TABLE = "geodet_runs"
SCENES_TABLE = "geodet_scenes"  # written by incremental runs (`geodet.incremental`)
STYLES_TABLE = "layer_styles"

#: The oldest GeoPackage version that holds what geodet writes (1.2 brought tables
#: without geometry, data_type 'attributes'). Recent GDALs write 1.4 by default, which
#: QGIS on an older GDAL (QGIS 3.22 and GDAL 3.6 on Debian 12) warns about on every layer.
GPKG_VERSION = "1.2"


#: Where the output goes: a local path, or a URL (a ``str``) that it is uploaded to.
Output = Path | str


def check_local_file(path: str | os.PathLike, suffix: str, what: str, kind: str) -> Path:
    """A local file that can be written: the right suffix, in a writable folder."""
    file = Path(path)
    if file.suffix.lower() != suffix:
        raise InputError(f"{what} must be {kind} ending in {suffix}, got {file}")
    parent = file.parent if str(file.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} directory does not exist: {parent}: create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"{what} directory is not writable: {parent}")
    if file.is_dir():
        raise InputError(f"{what} is a directory: {file}")
    return file


def check_output(path: str | os.PathLike, overwrite: bool) -> Output:
    """Validate the output path or URL before any work is done."""
    if storage.is_url(path):
        return _check_output_url(os.fspath(path), overwrite)
    out = check_local_file(path, ".gpkg", "output", "a GeoPackage")
    if out.exists() and not overwrite:
        raise InputError(f"output exists: {out}: pass --overwrite to replace it")
    return out


def _check_output_url(url: str, overwrite: bool) -> str:
    if not url.lower().endswith(".gpkg"):
        raise InputError(f"output must be a GeoPackage ending in .gpkg, got {url}")
    storage.check_writable(url)
    if not overwrite and storage.exists(url):
        raise InputError(f"output exists: {url}: pass --overwrite to replace it")
    return url


def layer_names(base: str, crs_tags: list[str]) -> list[str]:
    """``detections`` for one CRS; ``detections_epsg_32633``... for several."""
    return [base] if len(crs_tags) == 1 else [f"{base}_{tag}" for tag in crs_tags]


def describe(layer: str, run: dict) -> dict[str, str]:
    """The GPKG layer options that name and explain a layer in ``gpkg_contents``
    (QGIS shows them as the layer's metadata title and abstract)."""
    model = os.path.basename(str(run.get("model", "")))
    made = (f"by geodet {run.get('geodet_version', '')} with the model {model}, run started "
            f"{run.get('started_utc', '')}")
    if layer.startswith(DETECTIONS_LAYER):
        what = ("Detected objects, one polygon per box, with class_id, class_name, score, "
                f"scene and tile_id, found {made}.")
    elif layer.startswith(TILES_LAYER):
        what = ("Footprints of the tiles the scenes were cut into, with their status (done, "
                f"empty, skipped, failed), n_detections and the error of failed tiles, {made}.")
    elif layer == RUNS_TABLE:
        what = (f"Provenance of the run {made}: model hash, settings, scenes, execution "
                "providers, tile counts and timings.")
    elif layer == SCENES_TABLE:
        what = ("The scenes this output holds, each with the signature (ETag, else size "
                "and modification time) that incremental runs compare to find new scenes.")
    else:
        what = "QGIS default styles of the layers, written by geodet."
    return {"IDENTIFIER": f"{layer} ({model})" if model else layer, "DESCRIPTION": what}


def write_geopackage(out: Output, detections: dict[str, gpd.GeoDataFrame],
                     tiles: Iterable[tuple[str, gpd.GeoDataFrame]], runs: list[dict],
                     class_names: list[str],
                     tables: dict[str, pd.DataFrame] | None = None) -> None:
    """Write the detection layers (name -> frame), the tile layers (``(name, frame)``
    batches, appended in order), the ``runs`` records (this run's last), any other
    ``tables`` and the styles to a temporary file beside ``out``, and rename it into
    place; for a URL, into a local temporary folder, then upload it. A failed write
    (full disk...) raises `OutputError`; the previous ``out`` is then untouched."""
    if isinstance(out, str):
        with tempfile.TemporaryDirectory(prefix="geodet-") as folder:
            local = Path(folder) / "out.gpkg"
            write_geopackage(local, detections, tiles, runs, class_names, tables)
            storage.upload(local, out)
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial.gpkg")
    spatial = {"geometry_type": "Polygon", "GEOMETRY_NAME": GEOMETRY_COLUMN}
    written: list[str] = []  # layers in the order they were created

    def write(name: str, frame: pd.DataFrame, **options) -> None:
        """Append to layer ``name``, or create it with its description (the first
        layer also creates the file, as a GeoPackage `GPKG_VERSION`)."""
        if name in written:
            options["append"] = True
        else:
            options["layer_options"] = describe(name, runs[-1])
            if not written:
                options["dataset_options"] = {"VERSION": GPKG_VERSION}
            written.append(name)
        pyogrio.write_dataframe(frame, tmp, layer=name, **options)

    try:
        for name, frame in itertools.chain(detections.items(), tiles):  # tiles: batches
            write(name, frame, **spatial)
        tile_layers = [name for name in written if name not in detections]
        for name, table in {RUNS_TABLE: pd.DataFrame(runs), **(tables or {})}.items():
            write(name, table)
        write(STYLES_TABLE, styles_table(list(detections), tile_layers, class_names))
        os.replace(tmp, out)
    except (OSError, DataSourceError, DataLayerError, FeatureError) as e:
        raise OutputError.writing(out, e) from None  # before the cleanup frees the space
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
