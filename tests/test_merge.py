import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from geodet.detections import Detections
from geodet.merge import merge, nmm, nms, pair_iou, seam_merge


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
    assert sorted(nms(d, 0.5).tile_ids) == [0, 2]


def test_class_aware_and_scene_aware():
    boxes = [[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    d = Detections.build(np.array(boxes, float), [0.9, 0.8, 0.7], [0, 1, 0], [0, 0, 1],
                         [0, 1, 2])
    assert sorted(nms(d, 0.5).tile_ids) == [0, 1, 2]
    assert sorted(nms(d, 0.5, class_aware=False).tile_ids) == [0, 2]


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
    kept = nms(d, iou).tile_ids  # tile_ids hold each detection's index here
    assert set(kept.tolist()) == brute_nms(d, iou)
    perm = rng.permutation(n)
    assert nms(d.take(perm), iou).tile_ids.tolist() == kept.tolist()


def test_nmm_unites_fragments_into_the_stronger_box():
    d = dets([[0, 0, 10, 10], [3, 0, 12, 10], [20, 0, 30, 10]], [0.9, 0.6, 0.8])
    out = nmm(d, 0.5).sorted()
    np.testing.assert_array_equal(out.boxes, [[0, 0, 12, 10], [20, 0, 30, 10]])
    np.testing.assert_allclose(out.scores, [0.9, 0.8])


INF = np.inf
CORE_A = [-INF, -INF, 100, INF]  # tile 0 owns x < 100
CORE_B = [100, -INF, INF, INF]  # tile 1 owns x >= 100


def seam_case(boxes, scores, tiles):
    d = Detections.build(np.array(boxes, float), scores, np.zeros(len(scores)), 0, tiles)
    cores = np.array([CORE_A if t == 0 else CORE_B for t in tiles], float)
    return d, cores


def test_seam_pass_unites_the_pieces_of_a_large_object():
    d, cores = seam_case([[60, 0, 110, 20], [90, 0, 140, 20], [10, 0, 20, 10]],
                         [0.8, 0.7, 0.9], [0, 1, 0])
    out = seam_merge(d, cores, iou=0.5, ios=0.3).sorted()
    np.testing.assert_array_equal(out.boxes, [[10, 0, 20, 10], [60, 0, 140, 20]])
    np.testing.assert_allclose(out.scores, [0.9, 0.8])


def test_seam_pass_keeps_packed_neighbours_and_same_tile_pairs():
    # Two distinct objects either side of the seam, both reaching across it by a little.
    d, cores = seam_case([[89, 0, 101, 20], [100.5, 0, 112, 20]], [0.9, 0.9], [0, 1])
    assert len(seam_merge(d, cores, iou=0.5, ios=0.5)) == 2
    # Overlapping boxes from one tile were already resolved by that tile's NMS.
    d, cores = seam_case([[90, 0, 110, 20], [92, 0, 110, 20]], [0.9, 0.8], [0, 0])
    assert len(seam_merge(d, cores, iou=0.5, ios=0.5)) == 2


def test_merge_dispatch():
    d, cores = seam_case([[0, 0, 10, 10], [1, 0, 11, 10]], [0.9, 0.8], [0, 1])
    assert len(merge(d, "nms", iou=0.5, ios=0.5)) == 1
    assert len(merge(d, "nmm", iou=0.5, ios=0.5)) == 1
    assert len(merge(d, "ownership", iou=0.5, ios=0.5, cores=cores)) == 2  # inside cores
    with pytest.raises(ValueError, match="unknown merge strategy"):
        merge(d, "vote", iou=0.5, ios=0.5)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(2, 300), strip=st.integers(1, 40),
       grid=st.booleans())
def test_strips_find_the_pairs_one_tree_finds_and_merge_the_same(seed, n, strip, grid):
    """Above `STRIP` boxes the tree is built strip by strip (bounded memory): the same
    pairs, touching edges and boxes across many strips included, so the same merge."""
    import shapely

    from geodet import merge as merging

    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(0.5, 30, (n, 2))
    if grid:  # integer boxes: many touch
        xy, wh = np.round(xy / 4), np.round(wh / 4) + 1
    wh[: n // 20, 1] = 150  # tall ones
    boxes = np.hstack([xy, xy + wh])
    tree = shapely.STRtree(shapely.box(*boxes.T))
    expected = tree.query(tree.geometries, predicate="intersects")
    i, j = merging._intersecting(boxes, strip)
    assert sorted(zip(i.tolist(), j.tolist(), strict=True)) \
        == sorted(zip(*expected.tolist(), strict=True))

    d = Detections.build(boxes, rng.choice([0.5, 0.7, 0.9], n), rng.integers(0, 2, n), 0,
                         rng.integers(0, 4, n))
    cores = np.hstack([xy - 3, xy + 8])
    before = [nms(d, 0.5), nmm(d, 0.5), seam_merge(d, cores, 0.5, 0.5)]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(merging, "STRIP", strip)
        after = [nms(d, 0.5), nmm(d, 0.5), seam_merge(d, cores, 0.5, 0.5)]
    for a, b in zip(before, after, strict=True):
        for name in ("boxes", "scores", "class_ids", "tile_ids"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_settled_detections_join_the_seam_pass_but_never_each_other():
    """An incremental mosaic: two overlapping boxes an earlier run kept (settled, inside
    their cores) and a new piece reaching out of its core: the piece unites with the
    settled box it overlaps most; the settled ones are never merged with each other."""
    d = dets([[0, 0, 40, 10], [15, 0, 55, 10], [30, 0, 100, 10]], [0.9, 0.8, 0.7])
    settled = np.array([True, True, False])
    cores = np.array([[-np.inf, -np.inf, np.inf, np.inf]] * 2 + [[55, -np.inf, np.inf, np.inf]])
    out = seam_merge(d, cores, 0.5, 0.5, settled=settled)
    assert sorted(out.boxes.tolist()) == [[0, 0, 40, 10], [15, 0, 100, 10]]
    assert len(seam_merge(d, cores, 0.5, 0.5)) == 3  # not settled: only one reaches out
    assert len(merge(d, "nms", 0.05, 0.5, settled=settled)) == 2
    assert len(nms(d, 0.05)) == 1
