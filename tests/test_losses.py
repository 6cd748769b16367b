"""training.losses against hand-computed values."""

import math
import types

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from training.losses import sigmoid_focal_loss, smooth_l1_loss, ssd_loss  # noqa: E402


def test_focal_loss_hand_values():
    logits = tf.constant([[[0.0, 2.0], [2.0, 0.0]]])
    targets = tf.constant([[[1.0, 0.0], [0.0, 0.0]]])
    weights = tf.constant([[1.0, 0.0]])
    loss = sigmoid_focal_loss(logits, targets, weights, alpha=0.75, gamma=2.0).numpy()
    # Positive, p = .5: .75 * .5^2 * ln 2.
    assert loss[0, 0, 0] == pytest.approx(0.75 * 0.25 * math.log(2.0), rel=1e-5)
    # Negative, logit 2: p = sigmoid(2); (1 - .75) * p^2 * ln(1 + e^2).
    p = 1.0 / (1.0 + math.exp(-2.0))
    assert loss[0, 0, 1] == pytest.approx(0.25 * p * p * math.log(1 + math.exp(2.0)), rel=1e-5)
    np.testing.assert_array_equal(loss[0, 1], 0.0)  # weight 0: ignored anchor


def test_smooth_l1_hand_values():
    pred = tf.constant([[[0.5, 2.0, 0.0, -3.0]]])
    loss = smooth_l1_loss(pred, tf.zeros_like(pred), tf.constant([[1.0]]), delta=1.0).numpy()
    # .5 * .5^2 + (2 - .5) + 0 + (3 - .5)
    assert loss[0, 0] == pytest.approx(0.125 + 1.5 + 2.5, rel=1e-6)


def test_ssd_loss_normalized_by_matches_and_code_size():
    cfg = types.SimpleNamespace(focal_alpha=0.75, focal_gamma=2.0, smooth_l1_delta=1.0,
                                classification_weight=2.0, localization_weight=1.0)
    boxes = tf.constant([[[0.5, 0.0, 0.0, 0.0], [9.0, 9.0, 9.0, 9.0]]])
    logits = tf.zeros((1, 2, 1))
    targets = {"cls_targets": tf.constant([[[1.0], [0.0]]]), "cls_weights": tf.ones((1, 2)),
               "box_targets": tf.zeros((1, 2, 4)), "box_weights": tf.constant([[1.0, 0.0]])}
    parts = ssd_loss(boxes, logits, targets, cfg, num_matches=tf.constant(2.0))
    focal_pos = 0.75 * 0.25 * math.log(2.0)
    focal_neg = 0.25 * 0.25 * math.log(2.0)
    assert float(parts["classification"]) == pytest.approx(2.0 * (focal_pos + focal_neg) / 2.0, rel=1e-5)
    assert float(parts["localization"]) == pytest.approx(0.125 / (2.0 * 4.0), rel=1e-5)


def test_shape_errors():
    with pytest.raises(ValueError, match="expected"):
        smooth_l1_loss(tf.zeros((2, 4)), tf.zeros((2, 4)), tf.zeros((2,)))
