"""training.targets: matcher and TF box encoder against hand-computed values and app.model.box_coder."""

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from app.model import anchors as app_anchors  # noqa: E402
from app.model import box_coder  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.targets import assign_targets, encode_boxes  # noqa: E402

# Four anchors (yc, xc, h, w) and two boxes, IoUs worked out by hand:
#   A0 = [0, 0, .5, .5]      GT0 = [0, 0, .5, .4] (class 2): IoU(A0) = .2/.25 = 0.8
#   A1 = [.5, .5, 1, 1]      GT1 = [.45, .45, .65, .65] (class 0):
#   A2 = [.4, .4, .6, .6]       IoU(A2) = .0225/.0575 = 0.391, IoU(A1) = 0.084, IoU(A0) = 0.0087
#   A3 = [0, .5, .5, 1]      A3 overlaps neither box.
ANCHORS = np.array([[.25, .25, .5, .5], [.75, .75, .5, .5], [.5, .5, .2, .2], [.25, .75, .5, .5]],
                   np.float32)
BOXES = np.array([[0, 0, .5, .4], [.45, .45, .65, .65]], np.float32)
CLASSES = np.array([2, 0], np.int32)


def _targets(force, boxes=BOXES, classes=CLASSES, valid=None):
    out = assign_targets(boxes, classes, ANCHORS, 3, matched_threshold=0.5, unmatched_threshold=0.3,
                         force_match_for_each_row=force, gt_valid=valid)
    return {k: v.numpy() for k, v in out.items()}


def test_thresholds_without_force_match():
    t = _targets(force=False)
    np.testing.assert_array_equal(t["box_weights"], [1, 0, 0, 0])
    # A2 (IoU 0.39) lies between the thresholds: ignored, so weight 0.
    np.testing.assert_array_equal(t["cls_weights"], [1, 1, 0, 1])
    np.testing.assert_array_equal(t["cls_targets"], [[0, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    # GT0 on A0: ty = 0, tx = (.2 - .25) / .5 * 10 = -1, th = 0, tw = 5 ln(.4 / .5).
    np.testing.assert_allclose(t["box_targets"][0], [0, -1, 0, 5 * np.log(0.8)], atol=1e-5)
    np.testing.assert_array_equal(t["box_targets"][1:], 0)


def test_force_match_claims_best_anchor():
    t = _targets(force=True)
    np.testing.assert_array_equal(t["box_weights"], [1, 0, 1, 0])
    np.testing.assert_array_equal(t["cls_weights"], [1, 1, 1, 1])
    np.testing.assert_array_equal(t["cls_targets"][2], [1, 0, 0])
    # GT1 on A2: centre (.55, .55) vs (.5, .5), size .2 vs .2.
    np.testing.assert_allclose(t["box_targets"][2], [2.5, 2.5, 0, 0], atol=1e-4)


def test_padding_rows_match_nothing():
    # A padding row that copies GT0 exactly would win A0 if it counted.
    boxes = np.concatenate([BOXES, [[0, 0, .5, .5], [0, 0, 0, 0]]]).astype(np.float32)
    classes = np.array([2, 0, 1, 0], np.int32)
    valid = tf.constant([True, True, False, False])
    padded = _targets(True, boxes, classes, valid)
    plain = _targets(True)
    for key in plain:
        np.testing.assert_allclose(padded[key], plain[key], atol=1e-6, err_msg=key)


def test_no_boxes_gives_all_background():
    t = _targets(True, np.zeros((0, 4), np.float32), np.zeros((0,), np.int32))
    np.testing.assert_array_equal(t["box_weights"], 0)
    np.testing.assert_array_equal(t["cls_weights"], 1)
    assert np.all(t["cls_targets"] == 0) and np.all(np.isfinite(t["box_targets"]))


def test_tf_encode_app_decode_round_trip():
    cfg = dataclasses.replace(ModelConfig(), input_height=96, input_width=128)
    anchors = app_anchors.anchors_from_config(cfg)
    rng = np.random.RandomState(0)
    ymin, xmin = rng.uniform(0, 0.7, (2, len(anchors)))
    h, w = rng.uniform(0.02, 0.3, (2, len(anchors)))
    boxes = np.stack([ymin, xmin, ymin + h, xmin + w], axis=1).astype(np.float32)
    codes = encode_boxes(boxes, anchors).numpy()
    np.testing.assert_allclose(codes, box_coder.encode(boxes, anchors), rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(box_coder.decode(codes, anchors), boxes, atol=2e-6)


def test_bad_scales_rejected():
    with pytest.raises(ValueError, match="scales"):
        encode_boxes(BOXES, ANCHORS[:2], scales=(10.0, 10.0, 5.0))
