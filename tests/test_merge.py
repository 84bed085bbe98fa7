import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from geodet.detections import Detections
from geodet.merge import nms, pair_iou


def dets(boxes, scores, classes=None, scenes=0):
    n = len(scores)
    return Detections.build(np.array(boxes, float), scores,
                            classes if classes is not None else np.zeros(n), scenes,
                            np.arange(n))


def brute_nms(d: Detections, iou: float) -> set[int]:
    order = np.lexsort((d.boxes[:, 3], d.boxes[:, 2], d.boxes[:, 1], d.boxes[:, 0],
                        d.class_ids, -d.scores))
    kept = []
    for i in order:
        if all(d.class_ids[i] != d.class_ids[k]
               or pair_iou(d.boxes, np.array([i]), np.array([k]))[0] <= iou for k in kept):
            kept.append(i)
    return set(kept)


def test_duplicates_removed_neighbours_kept():
    d = dets([[0, 0, 10, 10], [1, 0, 11, 10], [12, 0, 22, 10]], [0.9, 0.8, 0.7])
    assert sorted(nms(d, 0.5)) == [0, 2]


def test_class_aware_and_scene_aware():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    d = Detections.build(np.array(boxes, float), [0.9, 0.8, 0.7], [0, 1, 0], [0, 0, 1],
                         [0, 1, 2])
    assert sorted(nms(d, 0.5)) == [0, 1, 2]
    assert sorted(nms(d, 0.5, class_aware=False)) == [0, 2]


def test_empty():
    assert len(nms(Detections.empty(), 0.5)) == 0


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 120), iou=st.floats(0.1, 0.9))
def test_matches_brute_force_greedy_nms_and_ignores_input_order(seed, n, iou):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 60, (n, 2))
    wh = rng.uniform(2, 20, (n, 2))
    d = dets(np.hstack([xy, xy + wh]), rng.choice([0.5, 0.6, 0.7, 0.9], n),
             rng.integers(0, 2, n))
    kept = nms(d, iou)
    assert set(kept.tolist()) == brute_nms(d, iou)
    perm = rng.permutation(n)
    assert set(perm[nms(d.take(perm), iou)].tolist()) == set(kept.tolist())
