"""app.nms on small hand-made cases."""

import numpy as np
import pytest

from app import nms

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
