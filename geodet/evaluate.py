"""Scoring detections against ground truth.

Greedy matching by descending score: a detection is a true positive when its IoU
with a not yet matched truth object of the same class reaches the threshold. Also
counted: *duplicates* (false positives whose best truth object was already matched
by a higher-scoring detection) and, when the tile grid is known, recall of objects
crossing a tile seam versus the others.
"""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely


def crosses_seam(truth: gpd.GeoSeries, tiles: gpd.GeoSeries) -> np.ndarray:
    """Which truth objects are cut by the edge of some tile (the scene's own outline
    cuts nothing)."""
    edges = shapely.STRtree(shapely.boundary(tiles.values))
    hit = np.zeros(len(truth), dtype=bool)
    idx, _ = edges.query(truth.values, predicate="crosses")
    hit[idx] = True
    return hit


def _iou(geom, others) -> np.ndarray:
    inter = shapely.area(shapely.intersection(geom, others))
    return inter / shapely.area(shapely.union(geom, others))


def evaluate(detections: gpd.GeoDataFrame, truth: gpd.GeoDataFrame, iou: float = 0.5,
             tiles: gpd.GeoDataFrame | None = None) -> dict[str, dict[str, float]]:
    """Per-class and overall (``"all"``) tp, fp, fn, precision, recall, F1, duplicate
    rate; with ``tiles``, also ``recall_seam`` and ``recall_rest`` (NaN when empty)."""
    if len(detections) and truth.crs and detections.crs and truth.crs != detections.crs:
        truth = truth.to_crs(detections.crs)
    t_geom = truth.geometry.values
    t_class = truth["class_name"].to_numpy(dtype=str)
    tree = shapely.STRtree(t_geom)
    matched = np.zeros(len(truth), dtype=bool)
    geoms = detections.geometry.values
    classes = detections["class_name"].to_numpy(dtype=str)
    outcome = np.empty(len(detections), dtype="U3")  # tp, fp or dup
    for i in np.argsort(-detections["score"].to_numpy(), kind="stable"):
        cands = tree.query(geoms[i], predicate="intersects")
        cands = cands[t_class[cands] == classes[i]]
        outcome[i] = "fp"
        if len(cands):
            ious = _iou(geoms[i], t_geom[cands])
            free = ~matched[cands] & (ious >= iou)
            if free.any():
                best = cands[np.flatnonzero(free)[ious[free].argmax()]]
                matched[best] = True
                outcome[i] = "tp"
            elif (ious >= iou).any():
                outcome[i] = "dup"
    seam = crosses_seam(truth.geometry, tiles.geometry) if tiles is not None else None

    report = {}
    for name in [*sorted(set(t_class) | set(classes)), "all"]:
        t_sel = np.ones(len(truth), bool) if name == "all" else t_class == name
        d_sel = np.ones(len(classes), bool) if name == "all" else classes == name
        tp = int((outcome[d_sel] == "tp").sum())
        dup = int((outcome[d_sel] == "dup").sum())
        fp = int(d_sel.sum()) - tp
        fn = int((t_sel & ~matched).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        row = {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r,
               "f1": 2 * p * r / (p + r) if p + r else 0.0,
               "duplicate_rate": float(dup / d_sel.sum()) if d_sel.sum() else 0.0}
        if seam is not None:
            for key, sel in (("recall_seam", t_sel & seam), ("recall_rest", t_sel & ~seam)):
                row[key] = float(matched[sel].mean()) if sel.any() else float("nan")
        report[str(name)] = row
    return report


def _read_layer(path: str, layer: str | None, needed: tuple[str, ...]) -> gpd.GeoDataFrame:
    import os

    import pyogrio

    from geodet.errors import InputError

    if not os.path.isfile(path):
        raise InputError(f"file not found: {path}")
    try:
        layers = [str(name) for name, _ in pyogrio.list_layers(path)]
    except Exception:
        raise InputError(f"cannot read {path} as a vector dataset (GeoPackage)") from None
    if layer is None:
        spatial = [str(n) for n, g in pyogrio.list_layers(path) if g is not None]
        if not spatial:
            raise InputError(f"{path} has no layer with geometries")
        layer = spatial[0]
    if layer not in layers:
        raise InputError(f"{path} has no layer {layer!r}; its layers: {', '.join(layers)}")
    frame = pyogrio.read_dataframe(path, layer=layer)
    missing = [c for c in needed if c not in frame.columns]
    if missing:
        raise InputError(f"layer {layer!r} of {path} lacks the column(s) {missing}")
    return frame


def evaluate_files(detections: str, truth: str, iou: float = 0.5,
                   truth_layer: str | None = None) -> dict[str, dict[str, float]]:
    """`evaluate` on GeoPackages: the ``detections`` layer of a geodet output (its
    ``tiles`` layer gives the seam figures) against ``truth_layer`` (default: the
    first layer with geometries) of ``truth``, which needs a ``class_name`` column."""
    import pyogrio

    from geodet.errors import InputError

    if not 0 < iou <= 1:
        raise InputError(f"--iou must be in (0, 1], got {iou}")
    dets = _read_layer(detections, "detections", ("class_name", "score"))
    ref = _read_layer(truth, truth_layer, ("class_name",))
    layers = [str(n) for n, _ in pyogrio.list_layers(detections)]
    tiles = pyogrio.read_dataframe(detections, layer="tiles") if "tiles" in layers else None
    return evaluate(dets, ref, iou=iou, tiles=tiles)


def format_report(report: dict[str, dict[str, float]]) -> str:
    """A plain-text table of an `evaluate` report."""
    seam = "recall_seam" in report["all"]
    head = (f"{'class':<20} {'precision':>9} {'recall':>7} {'F1':>6} {'TP':>7} {'FP':>6} "
            f"{'FN':>6} {'dup rate':>8}" + (f" {'seam rec':>8} {'rest rec':>8}" if seam else ""))
    lines = [head]
    for name, r in report.items():
        line = (f"{name[:20]:<20} {r['precision']:>9.3f} {r['recall']:>7.3f} {r['f1']:>6.3f} "
                f"{r['tp']:>7} {r['fp']:>6} {r['fn']:>6} {r['duplicate_rate']:>8.4f}")
        if seam:
            line += f" {r['recall_seam']:>8.3f} {r['recall_rest']:>8.3f}"
        lines.append(line)
    return "\n".join(lines)
