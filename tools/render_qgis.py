"""Open a geodet GeoPackage in real, headless QGIS, render it over its scene, and
report what QGIS sees.

Runs under the Python that has the QGIS bindings, not geodet's virtual environment
(Debian 12: ``apt-get install python3-qgis qgis-providers`` gives QGIS 3.22 for
/usr/bin/python3). The README picture docs/qgis-demo.png is made with::

    geodet demo --out geodet-demo
    /usr/bin/python3 tools/render_qgis.py geodet-demo/demo.gpkg geodet-demo/scene.tif \\
        docs/qgis-demo.png --window 1600,1900,800,500

Every spatial layer of the GeoPackage is opened as QGIS's "Add Vector Layer" does
(its default style loaded from the file), drawn over the scene into the PNG (tiles
under detections), and described in one JSON object on stdout: per layer its
validity, CRS, renderer and categories, labels, display expression, map tip and
metadata; every warning GDAL or QGIS raised; the PNG's map extent and size. The tests
(tests/test_qgis.py) check that JSON and the picture.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from osgeo import gdal  # QGIS's own GDAL, not rasterio's
from qgis.core import (
    Qgis,
    QgsApplication,
    QgsExpression,
    QgsExpressionContext,
    QgsExpressionContextUtils,
    QgsMapRendererCustomPainterJob,
    QgsMapSettings,
    QgsProviderRegistry,
    QgsRasterLayer,
    QgsRectangle,
    QgsVectorLayer,
)
from qgis.PyQt.QtCore import QSize
from qgis.PyQt.QtGui import QColor, QImage, QPainter


def layer_facts(layer: QgsVectorLayer) -> dict:
    """What an analyst sees of a layer: styling, labels, tips, metadata."""
    renderer, labeling = layer.renderer(), layer.labeling()
    facts = {
        "valid": layer.isValid(), "crs": layer.crs().authid(),
        "features": layer.featureCount(), "renderer": renderer.type(),
        "display_expression": layer.displayExpression(), "map_tip": layer.mapTipTemplate(),
        "title": layer.metadata().title(), "abstract": layer.metadata().abstract(),
        "labels": labeling.type() if labeling and layer.labelsEnabled() else None,
    }
    first = next(layer.getFeatures(), None)
    if first is not None:  # the expressions evaluated as QGIS shows them for a feature
        context = QgsExpressionContext(QgsExpressionContextUtils.globalProjectLayerScopes(layer))
        context.setFeature(first)
        facts["display_first"] = QgsExpression(layer.displayExpression()).evaluate(context)
        facts["map_tip_first"] = QgsExpression.replaceExpressionText(layer.mapTipTemplate(),
                                                                     context)
    if renderer.type() == "categorizedSymbol":
        facts["field"] = renderer.classAttribute()
        facts["symbol_levels"] = renderer.usingSymbolLevels()
        facts["categories"] = {
            str(cat.value()): {"outline": list(sl.strokeColor().getRgb()),
                               "outline_mm": sl.strokeWidth(), "filled": bool(sl.brushStyle()),
                               "pass": sl.renderingPass()}
            for cat in renderer.categories() for sl in [cat.symbol().symbolLayer(0)]}
    if facts["labels"] == "rule-based":
        facts["label_rules"] = [{"filter": rule.filterExpression(),
                                 "text": rule.settings().fieldName}
                                for rule in labeling.rootRule().children()]
    return facts


def render(layers: list, extent: QgsRectangle, size: QSize, path: str) -> None:
    """Draw ``layers`` (top first) over ``extent`` into a PNG of ``size`` pixels."""
    settings = QgsMapSettings()
    settings.setLayers(layers)
    settings.setDestinationCrs(layers[-1].crs())
    settings.setExtent(extent)
    settings.setOutputSize(size)
    settings.setBackgroundColor(QColor(255, 255, 255))
    settings.setFlag(QgsMapSettings.Antialiasing, True)
    image = QImage(size, QImage.Format_RGB32)  # no alpha: a smaller PNG
    image.fill(QColor(255, 255, 255))
    painter = QPainter(image)
    job = QgsMapRendererCustomPainterJob(settings, painter)
    job.renderSynchronously()
    painter.end()
    if not image.save(path, "PNG"):
        raise SystemExit(f"cannot write {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gpkg", help="a GeoPackage written by geodet")
    parser.add_argument("scene", help="the scene it was run on")
    parser.add_argument("png", help="the picture to write")
    parser.add_argument("--window", help="col,row,width,height: the part of a north-up "
                        "scene to draw, in scene pixels (default: all of it)")
    parser.add_argument("--max-side", type=int, default=1200,
                        help="longest side of the picture in pixels (default 1200)")
    args = parser.parse_args()

    messages: list[dict] = []  # every warning or error GDAL or QGIS raises from here on

    def gdal_message(level: int, _number: int, text: str) -> None:
        messages.append({"source": "GDAL", "level": int(level), "text": text})

    def qgis_message(text: str, tag: str, level: Qgis.MessageLevel) -> None:
        if level in (Qgis.Warning, Qgis.Critical):
            messages.append({"source": f"QGIS {tag}", "level": int(level), "text": text})

    gdal.PushErrorHandler(gdal_message)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # no display needed
    app = QgsApplication([], False)
    app.initQgis()
    QgsApplication.messageLog().messageReceived.connect(qgis_message)

    scene = QgsRasterLayer(args.scene, "scene")
    layers = {}
    for sub in QgsProviderRegistry.instance().querySublayers(args.gpkg):
        layer = QgsVectorLayer(sub.uri(), sub.name(), sub.providerKey())
        if layer.isSpatial():
            layers[sub.name()] = layer
    # Detections above tiles, both above the scene; layers in another CRS than the
    # scene's lie elsewhere on the map and are simply out of view.
    stack = sorted(layers.values(), key=lambda lyr: lyr.name().startswith("tiles"))
    col, row, width, height = (map(int, args.window.split(",")) if args.window
                               else (0, 0, scene.width(), scene.height()))
    px_x, px_y = scene.rasterUnitsPerPixelX(), scene.rasterUnitsPerPixelY()
    top_left = scene.extent().xMinimum() + col * px_x, scene.extent().yMaximum() - row * px_y
    extent = QgsRectangle(top_left[0], top_left[1] - height * px_y,
                          top_left[0] + width * px_x, top_left[1])
    scale = min(1.0, args.max_side / max(width, height))
    size = QSize(round(width * scale), round(height * scale))
    render([*stack, scene], extent, size, args.png)
    app.processEvents()  # deliver queued log messages

    print(json.dumps({
        "qgis": Qgis.QGIS_VERSION, "gdal": gdal.__version__,
        "scene": {"valid": scene.isValid(), "crs": scene.crs().authid()},
        "layers": {name: layer_facts(layer) for name, layer in layers.items()},
        "messages": messages,
        "png": {"extent": [extent.xMinimum(), extent.yMinimum(), extent.xMaximum(),
                           extent.yMaximum()], "size": [size.width(), size.height()]},
    }))
    sys.stdout.flush()
    os._exit(0)  # QGIS 3.22 crashes in exitQgis() when headless


if __name__ == "__main__":
    main()
