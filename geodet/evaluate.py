"""Scoring detections against ground truth: precision, recall, F1 per class."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import shapely


def evaluate(detections: gpd.GeoDataFrame, truth: gpd.GeoDataFrame,
             iou: float = 0.5) -> dict[str, dict[str, float]]:
    """Greedy matching by descending score: a detection is a true positive when its
    IoU with a not yet matched truth object of the same class reaches ``iou``.

    Returns ``{class_name: {"tp", "fp", "fn", "precision", "recall", "f1"}}`` with an
    ``"all"`` entry over every class.
    """
    truth = truth.to_crs(detections.crs) if len(detections) and truth.crs else truth
    tree = shapely.STRtree(truth.geometry.values)
    t_class = truth["class_name"].to_numpy()
    matched = np.zeros(len(truth), dtype=bool)
    tp_by, fp_by = {}, {}
    order = np.argsort(-detections["score"].to_numpy(), kind="stable")
    geoms = detections.geometry.values
    classes = detections["class_name"].to_numpy()
    for i in order:
        cands = tree.query(geoms[i], predicate="intersects")
        cands = cands[(t_class[cands] == classes[i]) & ~matched[cands]]
        best = None
        if len(cands):
            inter = shapely.area(shapely.intersection(geoms[i], truth.geometry.values[cands]))
            union = shapely.area(shapely.union(geoms[i], truth.geometry.values[cands]))
            ious = inter / union
            if ious.max() >= iou:
                best = cands[ious.argmax()]
        if best is None:
            fp_by[classes[i]] = fp_by.get(classes[i], 0) + 1
        else:
            matched[best] = True
            tp_by[classes[i]] = tp_by.get(classes[i], 0) + 1
    report = {}
    names = sorted(set(t_class) | set(classes))
    for name in [*names, "all"]:
        sel = np.ones(len(truth), bool) if name == "all" else t_class == name
        tp = sum(tp_by.values()) if name == "all" else tp_by.get(name, 0)
        fp = sum(fp_by.values()) if name == "all" else fp_by.get(name, 0)
        fn = int((sel & ~matched).sum())
        p = tp / (tp + fp) if tp + fp else 0.0
        r = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * p * r / (p + r) if p + r else 0.0
        report[name] = {"tp": tp, "fp": fp, "fn": fn, "precision": p, "recall": r, "f1": f1}
    return report
