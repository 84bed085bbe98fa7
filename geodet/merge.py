"""Merging detections across tiles.

Strategies (`Strategy`):

- ``ownership`` (default): each tile keeps only the detections whose centre lies in
  its core (done in the worker, see `geodet.tiling.owned`); the cores partition the
  scene, so objects smaller than the overlap come out exactly once and the fragments
  of objects cut by a tile edge are dropped. A *seam pass* (`seam_merge`) then looks
  only at detections whose box reaches out of their tile's core, and unites pairs
  from different tiles whose IoU or intersection-over-smaller exceeds a threshold:
  the pieces of objects larger than the overlap.
- ``nms``: plain global non-maximum suppression (IoU), every tile keeps everything.
- ``nmm``: greedy non-maximum *merging* on intersection-over-smaller, boxes united
  (SAHI's default): removes fragments but can merge packed neighbours.

An incremental mosaic run (`geodet.incremental`) merges its detections with the ones
the output already holds near them: those are *settled* (``settled``), merged by an
earlier run, so they are never paired with each other, only with the new ones, and
every one of them takes part in the seam pass.

Candidate pairs always come from a shapely 2 `STRtree`, so cost grows with the number
of overlapping pairs, never with the square of the number of detections. Shapely boxes
cost about 500 bytes each, so above `STRIP` boxes the tree is built strip by strip
(`_intersecting`): memory stays bounded, the pairs are the same.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Literal, get_args

import numpy as np
import shapely

from geodet.detections import Detections

Strategy = Literal["ownership", "nms", "nmm"]
STRATEGIES: tuple[Strategy, ...] = get_args(Strategy)
#: Most boxes in one STRtree (about 130 MB of shapely boxes and tree).
STRIP = 1 << 18


def pair_overlaps(boxes: np.ndarray, i: np.ndarray, j: np.ndarray):
    """IoU and intersection-over-smaller of the box pairs ``(boxes[i], boxes[j])``."""
    a, b = boxes[i], boxes[j]
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union, smaller = area_a + area_b - inter, np.minimum(area_a, area_b)
    iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    ios = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0)
    return iou, ios


def pair_iou(boxes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    return pair_overlaps(boxes, i, j)[0]


def _rank(dets: Detections) -> tuple[np.ndarray, np.ndarray]:
    """Canonical order (score, then class and position) and each detection's rank."""
    b = dets.boxes
    order = np.lexsort((b[:, 3], b[:, 2], b[:, 1], b[:, 0], dets.class_ids, -dets.scores))
    rank = np.empty(len(dets), dtype=np.int64)
    rank[order] = np.arange(len(dets))
    return order, rank


def _pairs(dets: Detections, rank: np.ndarray, class_aware: bool, cross_tile: bool,
           settled: np.ndarray | None = None):
    """Intersecting pairs ``(i, j)`` with ``i`` ranked above ``j``, of one scene (and
    one class, and different tiles, when asked), not both ``settled``."""
    i, j = _intersecting(dets.boxes)
    keep = (rank[i] < rank[j]) & (dets.scene_ids[i] == dets.scene_ids[j])
    if settled is not None:
        keep &= ~(settled[i] & settled[j])
    if class_aware:
        keep &= dets.class_ids[i] == dets.class_ids[j]
    if cross_tile:
        keep &= dets.tile_ids[i] != dets.tile_ids[j]
    return i[keep], j[keep]


def _intersecting(b: np.ndarray, strip: int = STRIP) -> tuple[np.ndarray, np.ndarray]:
    """Every pair ``(i, j)`` of boxes that intersect (edges touching included), in both
    orders and with ``i == j``, as ``STRtree.query(..., predicate="intersects")`` gives.

    More than ``strip`` boxes are cut into horizontal strips of about ``strip`` boxes
    each (by their lower y), a tree per strip holding every box that reaches into it.
    Two intersecting boxes share the lower y of their intersection, so both are in
    that point's strip; a pair is kept only there, so it comes out once.
    """
    n = len(b)
    if n <= strip:
        tree = shapely.STRtree(shapely.box(b[:, 0], b[:, 1], b[:, 2], b[:, 3]))
        return tree.query(tree.geometries, predicate="intersects")
    lo, hi = np.minimum(b[:, 1], b[:, 3]), np.maximum(b[:, 1], b[:, 3])  # as shapely.box
    edges = np.sort(lo)[::strip]  # strip k holds the y in [edges[k], edges[k + 1])

    def strip_of(y: np.ndarray) -> np.ndarray:
        return np.searchsorted(edges, y, side="right") - 1

    first = strip_of(lo)
    span = strip_of(hi) - first + 1
    members = np.repeat(np.arange(n), span)  # each box once per strip it reaches
    strips = np.repeat(first - np.cumsum(span) + span, span) + np.arange(len(members))
    by_strip = np.argsort(strips, kind="stable")
    members, starts = members[by_strip], np.searchsorted(strips[by_strip],
                                                           np.arange(len(edges) + 1))
    del strips, by_strip
    pairs_i, pairs_j = [], []
    for k in range(len(edges)):
        ids = members[starts[k]:starts[k + 1]]
        if len(ids):
            i, j = _intersecting(b[ids], len(ids))
            i, j = ids[i], ids[j]
            here = strip_of(np.maximum(lo[i], lo[j])) == k
            pairs_i.append(i[here])
            pairs_j.append(j[here])
    return np.concatenate(pairs_i), np.concatenate(pairs_j)


def _greedy(n: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Greedy pass in rank order over directed pairs (ranks): returns, for each rank,
    the rank that absorbed it, or -1 if it survives."""
    by_src = np.argsort(src, kind="stable")
    src, dst = src[by_src], dst[by_src]
    starts = np.searchsorted(src, np.arange(n + 1))
    absorbed_by = np.full(n, -1, dtype=np.int64)
    for r in np.unique(src):
        if absorbed_by[r] < 0:
            targets = dst[starts[r]:starts[r + 1]]
            targets = targets[absorbed_by[targets] < 0]
            absorbed_by[targets] = r
    return absorbed_by


def _resolve(dets: Detections, order, rank, i, j, hit, unite: bool) -> Detections:
    """Apply the greedy pass to the pairs selected by ``hit``; absorbed detections are
    dropped, and with ``unite`` their boxes are united into their absorber's."""
    absorbed_by = _greedy(len(dets), rank[i[hit]], rank[j[hit]])
    survivors = order[absorbed_by < 0]
    if not unite:
        return dets.take(survivors)
    boxes = dets.boxes.copy()
    gone = np.flatnonzero(absorbed_by >= 0)  # ranks
    into, frm = order[absorbed_by[gone]], order[gone]
    for col, ufunc in ((0, np.minimum), (1, np.minimum), (2, np.maximum), (3, np.maximum)):
        ufunc.at(boxes[:, col], into, boxes[frm, col])
    return replace(dets, boxes=boxes).take(survivors)


def nms(dets: Detections, iou: float, class_aware: bool = True,
        settled: np.ndarray | None = None) -> Detections:
    """Greedy non-maximum suppression: a detection goes when a higher-ranked one of
    the same scene (and class) overlaps it with IoU above ``iou``."""
    if len(dets) == 0:
        return dets
    order, rank = _rank(dets)
    i, j = _pairs(dets, rank, class_aware, cross_tile=False, settled=settled)
    return _resolve(dets, order, rank, i, j, pair_iou(dets.boxes, i, j) > iou, unite=False)


def nmm(dets: Detections, ios: float, class_aware: bool = True,
        settled: np.ndarray | None = None) -> Detections:
    """Greedy non-maximum merging: a detection whose intersection over the smaller
    box with a higher-ranked one exceeds ``ios`` is united into it (score kept)."""
    if len(dets) == 0:
        return dets
    order, rank = _rank(dets)
    i, j = _pairs(dets, rank, class_aware, cross_tile=False, settled=settled)
    return _resolve(dets, order, rank, i, j, pair_overlaps(dets.boxes, i, j)[1] > ios,
                    unite=True)


def seam_merge(dets: Detections, cores: np.ndarray, iou: float, ios: float,
               class_aware: bool = True, settled: np.ndarray | None = None) -> Detections:
    """The seam pass after ownership filtering.

    ``cores`` ``(N, 4)`` is the core of each detection's tile. Only detections whose
    box reaches out of their core can have a counterpart in another tile; among those,
    pairs from different tiles with IoU above ``iou`` or intersection-over-smaller
    above ``ios`` are united. Everything else passes untouched. ``settled``
    detections (see the module doc) always take part, never paired with each other.
    """
    b = dets.boxes
    near = ((b[:, 0] < cores[:, 0]) | (b[:, 1] < cores[:, 1])
            | (b[:, 2] > cores[:, 2]) | (b[:, 3] > cores[:, 3]))
    if settled is not None:
        near |= settled
    if near.sum() < 2:
        return dets
    seam = dets.take(near)
    order, rank = _rank(seam)
    i, j = _pairs(seam, rank, class_aware, cross_tile=True,
                  settled=None if settled is None else settled[near])
    o_iou, o_ios = pair_overlaps(seam.boxes, i, j)
    merged = _resolve(seam, order, rank, i, j, (o_iou > iou) | (o_ios > ios), unite=True)
    del seam, order, rank, i, j, o_iou, o_ios
    return _take_then(dets, ~near, merged)


def _take_then(dets: Detections, mask: np.ndarray, tail: Detections) -> Detections:
    """``Detections.concat([dets.take(mask), tail])``, each column written once into
    its result (the concatenation of a `take` holds the kept part twice)."""
    n = int(mask.sum())
    columns = {}
    for f in fields(Detections):
        column, end = getattr(dets, f.name), getattr(tail, f.name)
        out = np.empty((n + len(end), *column.shape[1:]),
                       dtype=np.result_type(column, end))
        np.compress(mask, column, axis=0, out=out[:n])
        out[n:] = end
        columns[f.name] = out
    return Detections(**columns)


def merge(dets: Detections, strategy: Strategy, iou: float, ios: float, class_aware: bool = True,
          cores: np.ndarray | None = None, settled: np.ndarray | None = None) -> Detections:
    """The global merge of one run's detections, by ``strategy`` (see module doc);
    ``cores`` (the core of each detection's tile) is needed by ``ownership``;
    ``settled``: which detections an earlier run merged (see the module doc)."""
    if strategy == "ownership":
        if cores is None:
            raise ValueError("the ownership strategy needs the tile cores")
        return seam_merge(dets, cores, iou, ios, class_aware, settled)
    if strategy == "nms":
        return nms(dets, iou, class_aware, settled)
    if strategy == "nmm":
        return nmm(dets, ios, class_aware, settled)
    raise ValueError(f"unknown merge strategy {strategy!r}: choose one of {STRATEGIES}")
