"""Writing the GeoPackage: detections, tile outcomes, run provenance, a QGIS style.

Everything goes into a temporary file beside the output, renamed into place only
when complete, so an interrupted run never leaves a half-written GeoPackage. An
output URL (``s3://bucket/key.gpkg``, `geodet.storage`) is written to a local
temporary file and uploaded once complete.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import quoteattr

import geopandas as gpd
import pandas as pd
import pyogrio

from geodet import storage
from geodet.errors import InputError

DETECTIONS_LAYER = "detections"
TILES_LAYER = "tiles"
RUNS_TABLE = "geodet_runs"
STYLES_TABLE = "layer_styles"
GEOMETRY_COLUMN = "geom"

# Outline colours for categories, cycled: distinct on imagery (Okabe-Ito, then extra).
PALETTE = ["230,159,0", "86,180,233", "0,158,115", "240,228,66", "0,114,178",
           "213,94,0", "204,121,167", "255,255,255", "255,0,0", "0,255,255"]


#: Where the output goes: a local path, or a URL (a ``str``) that it is uploaded to.
Output = Path | str


def check_output(path: str | os.PathLike, overwrite: bool) -> Output:
    """Validate the output path or URL before any work is done."""
    if storage.is_url(path):
        return _check_output_url(os.fspath(path), overwrite)
    out = Path(path)
    if out.suffix.lower() != ".gpkg":
        raise InputError(f"output must be a GeoPackage ending in .gpkg, got {out}")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output directory does not exist: {parent}: create it first")
    if not os.access(parent, os.W_OK):
        raise InputError(f"output directory is not writable: {parent}")
    if out.is_dir():
        raise InputError(f"output is a directory: {out}")
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


def category_style(layer: str, field: str, values: list[str]) -> str:
    """A QGIS QML categorised renderer: one outlined, unfilled symbol per value."""
    cats, symbols = [], []
    for i, v in enumerate(values):
        cats.append(f'<category render="true" symbol="{i}" value={quoteattr(v)} '
                    f"label={quoteattr(v)}/>")
        symbols.append(
            f'<symbol type="fill" name="{i}" alpha="1" clip_to_extent="1" force_rhr="0">'
            '<layer class="SimpleFill" enabled="1" locked="0" pass="0"><Option type="Map">'
            '<Option name="color" type="QString" value="0,0,0,0"/>'
            '<Option name="style" type="QString" value="no"/>'
            f'<Option name="outline_color" type="QString" value="{PALETTE[i % len(PALETTE)]},255"/>'
            '<Option name="outline_style" type="QString" value="solid"/>'
            '<Option name="outline_width" type="QString" value="0.6"/>'
            '<Option name="outline_width_unit" type="QString" value="MM"/>'
            "</Option></layer></symbol>"
        )
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
        f'<qgis version="3.34.0" styleCategories="Symbology">'
        f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} symbollevels="0" '
        'enableorderby="0" forceraster="0">'
        f"<categories>{''.join(cats)}</categories><symbols>{''.join(symbols)}</symbols>"
        "</renderer-v2></qgis>"
    )


def styles_table(layers: list[str], class_names: list[str]) -> pd.DataFrame:
    """The `layer_styles` rows that make QGIS open each detections layer categorised
    by class."""
    return pd.DataFrame([{
        "f_table_catalog": "", "f_table_schema": "", "f_table_name": layer,
        "f_geometry_column": GEOMETRY_COLUMN, "styleName": f"{layer} by class"[:30],
        "styleQML": category_style(layer, "class_name", class_names), "styleSLD": "",
        "useAsDefault": True, "description": "geodet default style", "owner": "",
        "ui": "", "update_time": datetime.now(UTC).replace(tzinfo=None),
    } for layer in layers])


def layer_names(base: str, crs_tags: list[str]) -> list[str]:
    """``detections`` for one CRS; ``detections_epsg_32633``... for several."""
    return [base] if len(crs_tags) == 1 else [f"{base}_{tag}" for tag in crs_tags]


def write_geopackage(out: Output, detections: dict[str, gpd.GeoDataFrame],
                     tiles: Iterable[tuple[str, gpd.GeoDataFrame]], run: dict,
                     class_names: list[str]) -> None:
    """Write the detection layers (name -> frame), the tile layers (``(name, frame)``
    batches, appended in order), the run record and the styles to a temporary file
    beside ``out``, and rename it into place; for a URL, into a local temporary
    folder, then upload it."""
    if isinstance(out, str):
        with tempfile.TemporaryDirectory(prefix="geodet-") as folder:
            local = Path(folder) / "out.gpkg"
            write_geopackage(local, detections, tiles, run, class_names)
            storage.upload(local, out)
        return
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial.gpkg")
    try:
        layer_opts = {"geometry_type": "Polygon", "GEOMETRY_NAME": GEOMETRY_COLUMN}
        for name, frame in detections.items():
            pyogrio.write_dataframe(frame, tmp, layer=name, **layer_opts)
        written: set[str] = set()
        for name, frame in tiles:
            pyogrio.write_dataframe(frame, tmp, layer=name, append=name in written,
                                    **layer_opts)
            written.add(name)
        pyogrio.write_dataframe(pd.DataFrame([run]), tmp, layer=RUNS_TABLE)
        pyogrio.write_dataframe(styles_table(list(detections), class_names), tmp,
                                layer=STYLES_TABLE)
        os.replace(tmp, out)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
