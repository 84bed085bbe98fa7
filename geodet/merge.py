"""Merging detections: non-maximum suppression over a spatial index.

Candidate pairs come from a shapely 2 `STRtree`, so the cost grows with the number of
*overlapping* pairs, not with the square of the number of detections.
"""

from __future__ import annotations

import numpy as np
import shapely

from geodet.detections import Detections


def pair_iou(boxes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Intersection over union of the box pairs ``(boxes[i], boxes[j])``."""
    a, b = boxes[i], boxes[j]
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a + area_b - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(dets: Detections, iou: float, class_aware: bool = True) -> np.ndarray:
    """Indexes of the detections kept by greedy NMS, in canonical rank order.

    A detection is suppressed by a higher-ranked kept one of the same scene (and
    class, when ``class_aware``) whose IoU with it exceeds ``iou``. Ranks are by
    score, ties broken by class and position, so the result does not depend on the
    input order.
    """
    n = len(dets)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    b = dets.boxes
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], dets.class_ids, -dets.scores))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)

    tree = shapely.STRtree(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
    i, j = tree.query(tree.geometries, predicate="intersects")
    # Each pair once, directed from the higher-ranked box to the lower-ranked one.
    i, j = i[rank[i] < rank[j]], j[rank[i] < rank[j]]
    same = dets.scene_ids[i] == dets.scene_ids[j]
    if class_aware:
        same &= dets.class_ids[i] == dets.class_ids[j]
    i, j = i[same], j[same]
    hit = pair_iou(b, i, j) > iou
    src, dst = rank[i[hit]], rank[j[hit]]

    # Greedy pass in rank order over the sparse graph of overlapping pairs.
    by_src = np.argsort(src, kind="stable")
    src, dst = src[by_src], dst[by_src]
    starts = np.searchsorted(src, np.arange(n + 1))
    suppressed = np.zeros(n, dtype=bool)
    for r in np.unique(src):
        if not suppressed[r]:
            suppressed[dst[starts[r]:starts[r + 1]]] = True
    return order[~suppressed]
