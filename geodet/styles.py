"""QGIS default styles for geodet's layers, written as QML without QGIS.

Each spatial layer gets one row in the GeoPackage's ``layer_styles`` table marked
``useAsDefault``, so QGIS (3.22 and later) opens it styled:

- detections: unfilled boxes categorised by ``class_name``, one colour per class, with a
  display expression and a map tip giving class and score;
- tiles: unfilled thin outlines categorised by ``status``, so the imagery stays
  visible; failed tiles in red, drawn above the others and labelled with the start
  of their ``error``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

import pandas as pd

GEOMETRY_COLUMN = "geom"
QGIS_VERSION = "3.22.0"  # the oldest QGIS these styles are written for

# Outline colours of the classes, cycled: distinct on imagery (Okabe-Ito, then extra).
PALETTE = [(230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66), (0, 114, 178),
           (213, 94, 0), (204, 121, 167), (255, 255, 255), (255, 0, 0), (0, 255, 255)]
FAILED_RGB = (228, 26, 28)
# status -> (outline RGBA, width in mm, line style); failed also labelled and on top.
TILE_OUTLINES = {
    "done": ((255, 255, 255, 150), 0.2, "solid"),
    "empty": ((160, 160, 160, 150), 0.2, "dash"),
    "skipped": ((86, 180, 233, 200), 0.2, "dot"),
    "failed": ((*FAILED_RGB, 255), 0.8, "solid"),
}
#: The label of a failed tile: the start of its error, wrapped to stay inside the tile.
FAILED_LABEL = 'if(length("error") > 60, left("error", 59) || \'…\', "error")'
FAILED_LABEL_WRAP = 24  # characters per line


def class_colours(class_names: list[str]) -> dict[str, tuple[int, int, int]]:
    """The outline colour of each class, as the detections style draws it."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(class_names)}


def _rgba(colour: tuple[int, ...]) -> str:
    """QGIS's ``r,g,b,a`` for an RGB (opaque) or RGBA tuple."""
    return ",".join(str(c) for c in (*colour, 255)[:4])


def _outline_symbol(name: str, colour: tuple[int, ...], width: float, line: str = "solid",
                    level: int = 0) -> str:
    """A fill symbol without fill: only an outline, drawn in rendering pass ``level``."""
    options = {"color": "0,0,0,0", "style": "no", "outline_color": _rgba(colour),
               "outline_style": line, "outline_width": str(width), "outline_width_unit": "MM"}
    return (f'<symbol type="fill" name="{name}" alpha="1" clip_to_extent="1" force_rhr="0">'
            f'<layer class="SimpleFill" enabled="1" locked="0" pass="{level}">'
            '<Option type="Map">'
            + "".join(f'<Option name="{k}" type="QString" value={quoteattr(v)}/>'
                      for k, v in options.items())
            + "</Option></layer></symbol>")


def _categorised(field: str, symbols: dict[str, str], levels: bool = False) -> str:
    """A categorised renderer on ``field``: value -> symbol XML (named by position)."""
    cats = "".join(f'<category render="true" symbol="{i}" value={quoteattr(v)} '
                   f"label={quoteattr(v)}/>" for i, v in enumerate(symbols))
    return (f'<renderer-v2 type="categorizedSymbol" attr={quoteattr(field)} '
            f'symbollevels="{int(levels)}" enableorderby="0" forceraster="0">'
            f"<categories>{cats}</categories><symbols>{''.join(symbols.values())}</symbols>"
            "</renderer-v2>")


def _qml(renderer: str, display: str, map_tip: str, labeling: str = "") -> str:
    """A whole QML document: renderer, optional labels, display expression, map tip."""
    return (
        "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>"
        f'<qgis version="{QGIS_VERSION}" labelsEnabled="{int(bool(labeling))}" '
        'styleCategories="LayerConfiguration|Symbology|Labeling|MapTips">'
        f"{renderer}{labeling}"
        f"<previewExpression>{escape(display)}</previewExpression>"
        f"<mapTip>{escape(map_tip)}</mapTip>"
        "</qgis>"
    )


def detections_style(class_names: list[str]) -> str:
    """QML: boxes outlined in one colour per class, class and score on hover."""
    colours = class_colours(class_names)
    symbols = {name: _outline_symbol(str(i), colours[name], 0.6)
               for i, name in enumerate(class_names)}
    return _qml(_categorised("class_name", symbols),
                display="\"class_name\" || ' ' || format_number(\"score\", 2)",
                map_tip='<b>[% "class_name" %]</b> [% format_number("score", 2) %]<br>'
                        '[% "scene" %], tile [% "tile_id" %]')


def _failed_labels() -> str:
    """Rule-based labels: failed tiles show the start of their error, in red on white."""
    red = _rgba(FAILED_RGB)
    text = quoteattr(FAILED_LABEL)
    return (
        '<labeling type="rule-based"><rules key="geodet-root">'
        '<rule key="geodet-failed" filter="&quot;status&quot; = \'failed\'"><settings>'
        f'<text-style fieldName={text} isExpression="1" fontSize="9" fontSizeUnit="Point" '
        f'textColor="{red}" textOpacity="1">'
        '<text-buffer bufferDraw="1" bufferSize="0.8" bufferSizeUnits="MM" '
        'bufferColor="255,255,255,255" bufferOpacity="0.8"/></text-style>'
        f'<text-format autoWrapLength="{FAILED_LABEL_WRAP}" useMaxLineLengthForAutoWrap="1" '
        'multilineAlign="1"/>'
        '<placement placement="1" offsetType="0"/>'  # over the tile's centroid
        '<rendering drawLabels="1" obstacle="0"/>'  # overlapping labels: QGIS keeps one
        "</settings></rule></rules></labeling>"
    )


def tiles_style() -> str:
    """QML: tile footprints as thin outlines by status; failed ones red and labelled."""
    symbols = {status: _outline_symbol(str(i), colour, width, line,
                                       level=int(status == "failed"))
               for i, (status, (colour, width, line)) in enumerate(TILE_OUTLINES.items())}
    return _qml(_categorised("status", symbols, levels=True), labeling=_failed_labels(),
                display="\"scene\" || ' tile ' || \"tile_id\" || ': ' || \"status\"",
                map_tip='<b>[% "status" %]</b>: tile [% "tile_id" %] of [% "scene" %], '
                        '[% "n_detections" %] detections'
                        '[% if("error" <> \'\', \'<br>\' || "error", \'\') %]')


def styles_table(detection_layers: list[str], tile_layers: list[str],
                 class_names: list[str]) -> pd.DataFrame:
    """The ``layer_styles`` rows that make QGIS open every layer with its style."""
    now = datetime.now(UTC).replace(tzinfo=None)
    rows = [(layer, "by class", detections_style(class_names)) for layer in detection_layers]
    rows += [(layer, "by status", tiles_style()) for layer in tile_layers]
    return pd.DataFrame([{
        "f_table_catalog": "", "f_table_schema": "", "f_table_name": layer,
        "f_geometry_column": GEOMETRY_COLUMN, "styleName": f"{layer} {what}"[:30],
        "styleQML": qml, "styleSLD": "", "useAsDefault": True,
        "description": "geodet default style", "owner": "", "ui": "", "update_time": now,
    } for layer, what, qml in rows])
