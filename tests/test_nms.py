"""app.model.nms on small hand-made cases."""

import numpy as np
import pytest

from app.model import nms

# A and B overlap with IoU 0.9; A and C with IoU 0.5 exactly (inter 2, union 4); D is alone.
A = [0.0, 0.0, 1.0, 3.0]
B = [0.0, 0.0, 0.9, 3.0]
C = [0.0, 1.0, 1.0, 4.0]
D = [5.0, 5.0, 6.0, 6.0]


def test_iou_one_to_many_hand_computed():
    got = nms.iou_one_to_many(np.array(A, np.float32), np.array([A, B, C, D], np.float32))
    np.testing.assert_allclose(got, [1.0, 0.9, 0.5, 0.0], atol=1e-6)


def test_iou_of_empty_boxes_is_zero():
    got = nms.iou_one_to_many(np.zeros(4, np.float32), np.zeros((2, 4), np.float32))
    np.testing.assert_array_equal(got, [0.0, 0.0])


def test_nms_suppresses_strictly_above_threshold():
    boxes = np.array([C, A, D, B], np.float32)
    scores = np.array([0.7, 0.9, 0.1, 0.8], np.float32)
    # A (0.9) kept; B (IoU 0.9) dropped; C (IoU 0.5, not > 0.5) kept; D kept.
    assert nms.nms(boxes, scores, 0.5, 10).tolist() == [1, 0, 2]
    assert nms.nms(boxes, scores, 0.49, 10).tolist() == [1, 2]
    assert nms.nms(boxes, scores, 0.95, 10).tolist() == [1, 3, 0, 2]
    assert nms.nms(boxes, scores, 0.5, 2).tolist() == [1, 0]
    assert nms.nms(boxes, scores, 0.5, 0).tolist() == []


def test_nms_ties_keep_lower_index_first():
    boxes = np.array([D, A, C], np.float32)
    assert nms.nms(boxes, [0.5, 0.5, 0.5], 0.4, 10).tolist() == [0, 1]


def test_nms_empty_input():
    assert nms.nms(np.zeros((0, 4)), np.zeros((0,)), 0.5, 5).tolist() == []
    assert nms.per_class_nms(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), int), 0.5, 5, 5).tolist() == []


def test_per_class_nms_does_not_suppress_across_classes():
    boxes = np.array([A, B, C, D, A], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95], np.float32)
    classes = np.array([0, 0, 0, 0, 1])
    # Class 0: A, C, D survive (B suppressed by A); class 1: its own copy of A.
    assert nms.per_class_nms(boxes, scores, classes, 0.5, 10, 10).tolist() == [4, 0, 2, 3]
    assert nms.per_class_nms(boxes, scores, classes, 0.5, 1, 10).tolist() == [4, 0]
    assert nms.per_class_nms(boxes, scores, classes, 0.5, 10, 3).tolist() == [4, 0, 2]


def test_class_agnostic_nms_suppresses_across_classes():
    boxes = np.array([A, B, C, D, A], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.95], np.float32)
    classes = np.array([0, 0, 0, 0, 1])
    # The class-1 copy of A (0.95) now drops A and B (IoU 1.0 and 0.9); C sits at IoU 0.5 exactly.
    assert nms.per_class_nms(boxes, scores, classes, 0.5, 10, 10, class_agnostic=True).tolist() == [4, 2, 3]
    assert nms.per_class_nms(boxes, scores, classes, 0.49, 10, 10, class_agnostic=True).tolist() == [4, 3]
    # The per-class cap still applies after suppression, then the total cap.
    assert nms.per_class_nms(boxes, scores, classes, 0.5, 1, 10, class_agnostic=True).tolist() == [4, 2]
    assert nms.per_class_nms(boxes, scores, classes, 0.5, 10, 2, class_agnostic=True).tolist() == [4, 2]
    assert nms.per_class_nms(np.zeros((0, 4)), np.zeros((0,)), np.zeros((0,), int), 0.5, 5, 5,
                             class_agnostic=True).tolist() == []


@pytest.mark.parametrize("call,match", [
    (lambda: nms.nms(np.zeros((2, 3)), np.zeros(2), 0.5, 1), r"boxes must be \[K, 4\]"),
    (lambda: nms.nms(np.zeros((2, 4)), np.zeros(3), 0.5, 1), r"scores must be \[2\]"),
    (lambda: nms.nms(np.zeros((2, 4)), np.zeros(2), 1.5, 1), "iou_threshold"),
    (lambda: nms.nms(np.zeros((2, 4)), np.zeros(2), 0.5, -1), "max_output"),
    (lambda: nms.per_class_nms(np.zeros((2, 4)), np.zeros(2), np.zeros(3), 0.5, 1, 1), "class_ids"),
])
def test_bad_arguments_raise(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def _brute_force_nms(boxes, scores, class_ids, iou_threshold, max_per_class, max_total):
    """Per-class greedy NMS written out the slow way, one pair at a time."""
    def iou(a, b):
        inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0)
        union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
        return inter / union if union > 0 else 0.0
    kept = []
    for cls in sorted(set(class_ids.tolist())):
        order = sorted(np.nonzero(class_ids == cls)[0], key=lambda i: (-scores[i], i))
        mine = []
        for i in order:
            if len(mine) < max_per_class and all(iou(boxes[i], boxes[j]) <= iou_threshold for j in mine):
                mine.append(i)
        kept.extend(mine)
    return sorted(kept, key=lambda i: (-scores[i], i))[:max_total]


def test_matrix_and_row_paths_agree_with_brute_force(monkeypatch):
    # Up to MATRIX_LIMIT boxes NMS reads one IoU matrix; above it, IoU rows per kept box.
    rng = np.random.RandomState(3)
    corners = rng.rand(300, 2).astype(np.float32) * 0.8
    boxes = np.concatenate([corners, corners + 0.05 + 0.15 * rng.rand(300, 2).astype(np.float32)], axis=1)
    scores = np.round(rng.rand(300), 2).astype(np.float32)  # rounded: many ties
    class_ids = rng.randint(0, 3, 300)
    want = _brute_force_nms(boxes, scores, class_ids, 0.3, 40, 100)
    matrix = nms.per_class_nms(boxes, scores, class_ids, 0.3, 40, 100)
    monkeypatch.setattr(nms, "MATRIX_LIMIT", 10)
    rows = nms.per_class_nms(boxes, scores, class_ids, 0.3, 40, 100)
    assert matrix.tolist() == rows.tolist() == [int(i) for i in want]
    assert len(want) > 50
