"""COCO mAP and detection agreement on hand-made detections with hand-computed values."""

import collections

import numpy as np
import pytest

from app.check.agreement import agreement, box_iou, pooled_agreement
from training.evaluate import coco_metrics

try:
    from app.model.postprocess import Detections
except ImportError:  # core-math's module not landed yet: same fields, same meaning
    Detections = collections.namedtuple("Detections", "boxes scores class_ids")

Example = collections.namedtuple("Example", "height width boxes classes")


def dets(boxes, scores, classes):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int32))


def example(boxes, classes, size=200):
    return Example(size, size, np.array(boxes, np.float32).reshape(-1, 4), np.array(classes, np.int32))


GT = [example([[0.1, 0.1, 0.6, 0.6]], [0]),
      example([[0.2, 0.3, 0.7, 0.8], [0.0, 0.0, 0.25, 0.25]], [1, 2])]


def test_perfect_detections_give_map_one():
    preds = [dets(e.boxes, [0.9] * len(e.classes), e.classes) for e in GT]
    m = coco_metrics(GT, preds, 3)
    assert m["map"] == pytest.approx(1.0, abs=1e-6)
    assert m["map50"] == pytest.approx(1.0, abs=1e-6)
    assert [r["ap"] for r in m["per_class"]] == pytest.approx([1.0, 1.0, 1.0])
    assert len(m["pr_curve"]["recall"]) == 101


def test_shifted_box_passes_only_low_iou_thresholds():
    # 100x100 px box shifted 10 px right: IoU = 90*100 / (2*100*100 - 90*100) = 90/110 = 0.818,
    # so thresholds 0.50..0.80 (7 of 10) match: mAP = 0.7, mAP@0.5 = 1.
    gt = [example([[0.25, 0.25, 0.75, 0.75]], [0])]
    m = coco_metrics(gt, [dets([[0.25, 0.30, 0.75, 0.80]], [0.8], [0])], 1)
    assert m["map"] == pytest.approx(0.7, abs=1e-6)
    assert m["map50"] == pytest.approx(1.0, abs=1e-6)


def test_half_recall_and_wrong_class():
    # One of two boxes found: precision 1 up to recall 0.5 -> 51 of 101 recall points.
    gt = [example([[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 0.9]], [0, 0])]
    m = coco_metrics(gt, [dets([[0.1, 0.1, 0.4, 0.4]], [0.9], [0])], 1)
    assert m["map50"] == pytest.approx(51 / 101, abs=1e-6)
    wrong = coco_metrics(gt, [dets([[0.1, 0.1, 0.4, 0.4]], [0.9], [1])], 2)
    assert wrong["map"] == pytest.approx(0.0, abs=1e-6)


def test_no_detections_is_zero_and_mismatched_lengths_raise():
    assert coco_metrics(GT, [dets([], [], []), dets([], [], [])], 3)["map"] == 0.0
    with pytest.raises(ValueError, match="one Detections per example"):
        coco_metrics(GT, [dets([], [], [])], 3)


def test_box_iou_hand_values():
    iou = box_iou([[0, 0, 1, 1]], [[0, 0, 1, 1], [0, 0.5, 1, 1.5], [2, 2, 3, 3]])
    assert iou[0] == pytest.approx([1.0, 1 / 3, 0.0], abs=1e-6)


def test_agreement_counts_missing_extra_and_wrong_class():
    a = dets([[0, 0, 0.5, 0.5], [0.5, 0.5, 1, 1]], [0.9, 0.8], [0, 1])
    assert agreement(a, a) == 1.0
    # b finds the first box, misses the second, adds a third: 2*1 / (2+2) = 0.5.
    b = dets([[0.02, 0, 0.5, 0.5], [0, 0.5, 0.4, 1]], [0.7, 0.6], [0, 2])
    assert agreement(a, b) == pytest.approx(0.5)
    # Same boxes, other class: no match.
    assert agreement(a, dets(a.boxes, a.scores, [2, 2])) == 0.0
    empty = dets([], [], [])
    assert agreement(empty, empty) == 1.0 and agreement(a, empty) == 0.0
    # Pooled: (2*2 + 2*1) matches over (4 + 4) detections.
    assert pooled_agreement([a, a], [a, b]) == pytest.approx(6 / 8)
    with pytest.raises(ValueError, match="iou"):
        agreement(a, b, iou=0.0)
