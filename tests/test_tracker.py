"""app.tracking.tracker on hand-made tracks, and its MOTA on the synthetic camera against a floor."""

import numpy as np
import pytest

from app.tracking import tracker
from conftest import ROOT

A = [10.0, 10.0, 50.0, 40.0]   # 40 x 30 px


def _moving(step, dx=5.0):
    return np.array([[A[0] + dx * step, A[1], A[2] + dx * step, A[3]]], np.float32)


def test_state_round_trip_hand_computed():
    state = tracker.corners_to_state(np.array([A]))
    np.testing.assert_allclose(state, [[30.0, 25.0, 40.0, 30.0]])
    np.testing.assert_allclose(tracker.state_to_corners(state), [A])


def test_state_matrices_are_the_column_formulas_bit_for_bit():
    rng = np.random.RandomState(0)
    boxes = rng.uniform(0, 640, (50, 4)).astype(np.float32)  # x1 < x0 in some: negative widths too
    b = boxes.astype(np.float64)
    state = np.stack([(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], axis=1)
    assert np.array_equal(tracker.corners_to_state(boxes), state)
    half_w, half_h = np.maximum(state[:, 2], 0) / 2, np.maximum(state[:, 3], 0) / 2
    corners = np.stack([state[:, 0] - half_w, state[:, 1] - half_h, state[:, 0] + half_w, state[:, 1] + half_h], axis=1)
    assert np.array_equal(tracker.state_to_corners(state), corners.astype(np.float32))


def test_merge_duplicates_without_and_with_a_duplicate():
    apart = np.array([A, [100.0, 10.0, 140.0, 40.0]], np.float32)
    primary, parent = tracker.merge_duplicates(apart, np.array([0.5, 0.9], np.float32))
    assert primary.tolist() == [0, 1] and parent.tolist() == [0, 1]
    close = np.array([A, [100.0, 10.0, 140.0, 40.0], [11.0, 10.0, 51.0, 41.0]], np.float32)  # 0 and 2: IoU 0.91
    primary, parent = tracker.merge_duplicates(close, np.array([0.5, 0.9, 0.7], np.float32))
    assert primary.tolist() == [1, 2] and parent.tolist() == [2, 1, 2]


def test_greedy_match_takes_highest_iou_first():
    iou = np.array([[0.9, 0.8], [0.85, 0.2]])
    # (0, 0) first; row 1 can then only take column 1, below min_iou 0.3.
    assert tracker.greedy_match(iou, 0.3).tolist() == [[0, 0]]
    assert tracker.greedy_match(iou, 0.1).tolist() == [[0, 0], [1, 1]]


def test_greedy_match_compares_in_the_iou_precision_and_breaks_ties_row_major():
    at = np.float32(0.3)  # 0.30000001: float32 IoU equal to float32(min_iou) is a match, as numpy compares
    iou = np.array([[at, 0.5], [0.5, 0.0], [0.2999999, 0.0]], np.float32)
    assert tracker.greedy_match(iou, 0.3).tolist() == [[0, 1], [1, 0]]  # (0, 1) and (1, 0) tie: row 0 first
    assert tracker.greedy_match(iou[[0, 2]][:, :1], 0.3).tolist() == [[0, 0]]


def test_confirmed_after_min_hits_then_ends_after_max_age():
    t = tracker.Tracker(3, min_hits=3, max_age=2)
    frames = [t.update(_moving(i), [0], [0.9]) for i in range(3)]
    assert [f.ids.tolist() for f in frames] == [[], [], [1]]
    assert frames[2].detection_ids.tolist() == [1]
    misses = [t.update(np.zeros((0, 4)), [], []) for _ in range(3)]
    assert [f.ids.tolist() for f in misses] == [[1], [1], []]
    assert misses[2].ended.tolist() == [1]
    # Coasting, the box kept moving at 5 px a frame: the first missed frame predicts x0 = 10 + 5 * 3.
    np.testing.assert_allclose(misses[0].boxes, _moving(3), atol=1e-4)
    assert not misses[0].matched.any() and misses[0].scores.tolist() == [0.0]


def test_tentative_track_dies_on_its_first_miss():
    t = tracker.Tracker(3, min_hits=3, max_age=5)
    t.update(_moving(0), [0], [0.9])
    t.update(np.zeros((0, 4)), [], [])
    assert len(t) == 0


def test_label_is_score_weighted_majority_and_flicker_keeps_the_id():
    t = tracker.Tracker(3, min_hits=1, max_age=5)
    labels = [0, 0, 1, 0, 1, 1, 1]
    ids = [t.update(_moving(i), [c], [0.8]).ids.tolist() for i, c in enumerate(labels)]
    assert ids == [[1]] * len(labels)
    assert t.update(_moving(7), [2], [0.9]).class_ids.tolist() == [1]  # 1: 3.2, 0: 2.4, 2: 0.9


def test_duplicate_labels_on_one_object_are_one_track():
    t = tracker.Tracker(3, min_hits=1, max_age=5)
    box = np.array([A, [11.0, 10.0, 51.0, 41.0]], np.float32)  # IoU 0.91: per-class NMS kept both
    frame = t.update(box, [0, 1], [0.6, 0.7])
    assert frame.ids.tolist() == [1] and frame.detection_ids.tolist() == [1, 1]
    np.testing.assert_allclose(frame.boxes, box[1:])  # the higher-scoring box
    assert frame.class_ids.tolist() == [1]


def test_two_crossing_objects_keep_their_ids():
    # Half a box apart vertically: IoU 0.33 where they overlap most, below DUPLICATE_IOU.
    t = tracker.Tracker(3, min_hits=2, max_age=3)
    for i in range(20):
        left = [0.0 + 10 * i, 100.0, 60.0 + 10 * i, 160.0]
        right = [200.0 - 10 * i, 130.0, 260.0 - 10 * i, 190.0]
        frame = t.update(np.array([left, right], np.float32), [0, 1], [0.9, 0.9])
        if i >= 1:
            assert frame.detection_ids.tolist() == [1, 2], i


def test_bad_input_is_a_value_error():
    t = tracker.Tracker(2)
    with pytest.raises(ValueError, match="same length"):
        t.update(np.zeros((2, 4)), [0], [0.5, 0.5])
    with pytest.raises(ValueError, match="class_ids must be in 0..1"):
        t.update(np.zeros((1, 4)), [2], [0.5])
    with pytest.raises(ValueError, match="min_hits"):
        tracker.Tracker(2, min_hits=0)


def test_mota_on_the_synthetic_camera_holds_a_floor():
    pytest.importorskip("motmetrics")
    from app.model.bundle import load_bundle
    from benchmarks import tracking
    bundle = load_bundle(str(ROOT / "models" / "demo"))
    m = tracking.measure(tracking.cpu_worker(bundle), len(bundle.labels), seeds=(0, 1, 2), frames=200)
    switches_per_100 = 100.0 * m["num_switches"] / m["num_objects"]
    print("MOTA {:.3f}, {:.2f} ID switches per 100 track-frames, {:.0f} fragmentations over {:.0f}"
          .format(m["mota"], switches_per_100, m["num_fragmentations"], m["num_objects"]))
    assert m["num_objects"] > 1000  # 600 frames of 2-4 shapes (1200 track-frames)
    assert m["mota"] >= 0.85  # 0.946 measured
    assert switches_per_100 <= 1.0  # 0.33 measured (4 switches)


def test_a_negative_score_can_hand_the_label_to_another_class():
    t = tracker.Tracker(2, min_hits=1, max_age=5)
    votes = [(0, 0.5), (1, 0.4), (0, -0.3)]
    labels = [t.update(_moving(i), [c], [s]).class_ids.tolist() for i, (c, s) in enumerate(votes)]
    assert labels == [[0], [0], [1]]  # votes 0.5 / 0.4, then 0.2 / 0.4
