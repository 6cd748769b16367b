"""app.tracking.pairs (IoU pairs, greedy matching) by hand, and the python and numpy paths of the
object stage (pairs, the tracker, zones) giving the same answers."""

import numpy as np

from app.tracking import pairs, tracker, zones

A = [0.0, 0.0, 10.0, 10.0]
B = [5.0, 0.0, 15.0, 10.0]   # half of A: IoU 50 / 150
FAR = [100.0, 100.0, 110.0, 120.0]


def _random_boxes(rng, count):
    corner = rng.uniform(0, 300, (count, 2))
    return np.concatenate([corner, corner + rng.uniform(5, 80, (count, 2))], axis=1).astype(np.float32).tolist()


def test_iou_pairs_hand_computed():
    assert pairs.iou_pairs([A, FAR], [FAR, B], 0.3) == [(1.0 / 3.0, 0, 1), (1.0, 1, 0)]  # row-major
    assert pairs.iou_pairs([A], [B], 0.34) == []
    assert pairs.iou_pairs_within([A, FAR, B], 0.3) == [(1.0 / 3.0, 0, 2)]  # no (i, i), no (2, 0)
    assert pairs.iou_pairs([A, [3.0, 3.0, 3.0, 9.0]], [A], 0.01) == [(1.0, 0, 0)]  # zero area: no IoU


def test_greedy_pairs_takes_highest_iou_first_ties_row_major():
    candidates = [(0.9, 0, 0), (0.8, 0, 1), (0.85, 1, 0), (0.5, 1, 1), (0.5, 2, 2), (0.5, 3, 2)]
    assert pairs.greedy_pairs(candidates) == [(0, 0), (1, 1), (2, 2)]


def test_python_and_numpy_pairs_are_the_same_floats():
    rng = np.random.RandomState(0)
    a, b = _random_boxes(rng, 30), _random_boxes(rng, 40)
    for least in (0.05, 0.2, 0.4):
        found = pairs._python_pairs(a, b, least, False)
        assert found == pairs._numpy_pairs(a, b, least, False) and len(found) > 0
        within = pairs._python_pairs(b, b, least, True)
        assert within == pairs._numpy_pairs(b, b, least, True)
        assert within == [(iou, i, j) for iou, i, j in pairs._python_pairs(b, b, least, False) if i < j]
    assert pairs.iou_pairs(a, b, 0.3) == pairs._numpy_pairs(a, b, 0.3, False)  # 1200 pairs: numpy's path


def _moving_scene(frames, count):
    """benchmarks.tracking.moving_boxes with a second label's box on two of the objects (duplicates)."""
    from benchmarks.tracking import moving_boxes
    return [(np.concatenate([boxes, boxes[:2] + 1.0]), np.concatenate([ids, (ids[:2] + 1) % 3]),
             np.concatenate([scores, scores[:2]])) for boxes, ids, scores in moving_boxes(count, frames)]


def _track_all(scene):
    t = tracker.Tracker(3, min_hits=2, max_age=3)
    return [[v.tolist() for v in t.update(boxes, ids, scores, i / 30.0)]
            for i, (boxes, ids, scores) in enumerate(scene)]


def test_tracker_gives_the_same_frames_on_python_and_numpy_pairs(monkeypatch):
    scene = _moving_scene(40, 30)  # 27 boxes a frame: numpy's path at the default PYTHON_PAIRS
    monkeypatch.setattr(pairs, "PYTHON_PAIRS", 10 ** 9)
    in_python = _track_all(scene)
    monkeypatch.setattr(pairs, "PYTHON_PAIRS", 0)
    in_numpy = _track_all(scene)
    assert in_python == in_numpy
    assert max(ids for frame in in_python for ids in frame[0]) >= 25  # the tracks were confirmed
    assert sum(frame[6][-2:] == frame[6][:2] and frame[6][0] > 0 for frame in in_python) > 30  # duplicates merged


def test_inside_each_python_and_numpy_agree(monkeypatch):
    l_shape = [[0, 0], [50, 0], [50, 50], [100, 50], [100, 100], [0, 100]]
    found = [zones.Zone(name, None, 1, 0.0, None, zones.edges(p))
             for name, p in (("l", l_shape), ("t", [[0, 0], [60, 0], [60, 80]]))]
    tests = zones.zone_tests(found)
    points = [tuple(p) for p in np.random.RandomState(0).uniform(-10, 110, (300, 2)).tolist()]
    expected = zones.contains_each(tests.joined, np.array(points)).tolist()
    monkeypatch.setattr(zones, "PYTHON_TESTS", 10 ** 9)
    assert zones.inside_each(tests, points) == expected
    monkeypatch.setattr(zones, "PYTHON_TESTS", 0)
    assert zones.inside_each(tests, points) == expected
    hand = [(25.0, 25.0), (75.0, 75.0), (75.0, 25.0)]  # in both; in the L only; in neither
    assert zones.inside_each(tests, hand) == [[True, True], [True, False], [False, False]]
    assert zones.inside_each(zones.zone_tests([]), points[:2]) == [[], []]


def test_a_zero_area_detection_is_an_object_of_its_own():
    boxes = np.array([A, [5.0, 5.0, 5.0, 5.0], [1.0, 0.0, 11.0, 10.0]], np.float32)  # 0 and 2: IoU 0.82
    primary, parent = tracker.merge_duplicates(boxes, np.array([0.9, 0.8, 0.7], np.float32))
    assert primary.tolist() == [0, 1] and parent.tolist() == [0, 1, 0]
