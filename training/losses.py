"""SSD losses as the seed config sets them: sigmoid focal classification + smooth L1 localization.

Both are summed over anchors and divided by the number of positive anchors
(normalize_loss_by_num_matches); the localization loss is also divided by the
code size 4 (normalize_loc_loss_by_codesize). Under tf.distribute the match
count is the global one, so a replica's share of the loss sums to the
single-device loss.
"""

import tensorflow as tf

CODE_SIZE = 4


def sigmoid_focal_loss(logits, targets, weights, alpha=0.75, gamma=2.0):
    """OD API weighted_sigmoid_focal loss, per entry.

    Args:
      logits: float32 [B, N, C] class logits (no background column).
      targets: float32 [B, N, C] one-hot targets (all zeros for background).
      weights: float32 [B, N] anchor weights (0 for ignored anchors).
      alpha: weight of positive entries; negatives get 1 - alpha.
      gamma: focusing exponent.

    Returns:
      float32 [B, N, C] losses.
    """
    if logits.shape.rank != 3 or targets.shape.rank != 3 or weights.shape.rank != 2:
        raise ValueError("expected logits/targets [B, N, C] and weights [B, N], got {}, {}, {}"
                         .format(logits.shape, targets.shape, weights.shape))
    cross_entropy = tf.nn.sigmoid_cross_entropy_with_logits(labels=targets, logits=logits)
    probs = tf.sigmoid(logits)
    p_t = targets * probs + (1.0 - targets) * (1.0 - probs)
    modulating = tf.pow(1.0 - p_t, gamma)
    alpha_t = targets * alpha + (1.0 - targets) * (1.0 - alpha)
    return modulating * alpha_t * cross_entropy * weights[..., None]


def smooth_l1_loss(predictions, targets, weights, delta=1.0):
    """OD API weighted_smooth_l1 (Huber) loss, summed over the 4 code entries.

    Args:
      predictions: float32 [B, N, 4] predicted (ty, tx, th, tw).
      targets: float32 [B, N, 4] target codes.
      weights: float32 [B, N] anchor weights (1 for positives).
      delta: where the loss turns from quadratic to linear.

    Returns:
      float32 [B, N] losses.
    """
    if predictions.shape.rank != 3 or weights.shape.rank != 2:
        raise ValueError("expected predictions [B, N, 4] and weights [B, N], got {}, {}"
                         .format(predictions.shape, weights.shape))
    diff = tf.abs(predictions - targets)
    quadratic = tf.minimum(diff, delta)
    huber = 0.5 * tf.square(quadratic) + delta * (diff - quadratic)
    return tf.reduce_sum(huber, axis=-1) * weights


def ssd_loss(box_encodings, class_logits, targets, train_cfg, num_matches):
    """The normalized SSD loss parts for one (per-replica) batch.

    Args:
      box_encodings: float32 [B, N, 4] model output.
      class_logits: float32 [B, N, C] model output.
      targets: dict from training.targets.assign_targets, batched ([B, N, ...]).
      train_cfg: training.config.TrainConfig-like (focal_alpha, focal_gamma,
        smooth_l1_delta, classification_weight, localization_weight).
      num_matches: float32 scalar, positives in the *global* batch (>= 1).

    Returns:
      dict of float32 scalars: classification, localization (both weighted and
      normalized by num_matches; localization also by the code size).
    """
    cls = sigmoid_focal_loss(class_logits, targets["cls_targets"], targets["cls_weights"],
                             train_cfg.focal_alpha, train_cfg.focal_gamma)
    loc = smooth_l1_loss(box_encodings, targets["box_targets"], targets["box_weights"],
                         train_cfg.smooth_l1_delta)
    return {
        "classification": train_cfg.classification_weight * tf.reduce_sum(cls) / num_matches,
        "localization": train_cfg.localization_weight * tf.reduce_sum(loc) / (num_matches * CODE_SIZE),
    }

