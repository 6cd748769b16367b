"""SSD training targets in TensorFlow: IoU -> argmax matcher -> faster_rcnn box encoding.

Anchors come from `app.model.anchors` (the only anchor maths); `encode_boxes` mirrors
`app.model.box_coder.encode` op for op, so a TF-encoded target decodes back with the
app's numpy `decode` (tests/test_targets.py proves it). IoU, the threshold
matcher and the gather are Model Garden's `official.vision.ops`.

Matcher semantics (OD API `argmax_matcher`, negatives_lower_than_unmatched):
each anchor takes the ground-truth box of highest IoU; IoU >= matched_threshold
is positive, IoU < unmatched_threshold negative, in between ignored; with
force_match_for_each_row every ground-truth box also claims its best anchor.
"""

import tensorflow as tf
from official.vision.ops import box_matcher, iou_similarity, target_gather

from app.model import box_coder

EPSILON = box_coder.EPSILON
POSITIVE, NEGATIVE, IGNORED = 1, -1, -2


def anchors_to_corners(anchors):
    """(ycenter, xcenter, h, w) -> (ymin, xmin, ymax, xmax), float32 [N, 4], normalized."""
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    yc, xc, h, w = tf.unstack(anchors, axis=-1)
    return tf.stack([yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0], axis=-1)


def encode_boxes(boxes, anchors, scales=box_coder.DEFAULT_SCALES):
    """TF twin of `app.model.box_coder.encode` (faster_rcnn_box_coder).

    Args:
      boxes: float32 [..., N, 4] normalized (ymin, xmin, ymax, xmax).
      anchors: float32 [N, 4] (ycenter, xcenter, height, width), normalized.
      scales: (y, x, height, width) scale factors.

    Returns:
      float32 [..., N, 4] codes (ty, tx, th, tw).
    """
    if len(scales) != 4 or min(scales) <= 0:
        raise ValueError("scales must be 4 positive numbers (y, x, h, w), got {!r}".format(scales))
    boxes = tf.convert_to_tensor(boxes, tf.float32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=-1)
    yca, xca, ha, wa = tf.unstack(anchors, axis=-1)
    h, w = ymax - ymin + EPSILON, xmax - xmin + EPSILON
    ha, wa = ha + EPSILON, wa + EPSILON
    ty = ((ymin + ymax) / 2.0 - yca) / ha * scales[0]
    tx = ((xmin + xmax) / 2.0 - xca) / wa * scales[1]
    th = tf.math.log(h / ha) * scales[2]
    tw = tf.math.log(w / wa) * scales[3]
    return tf.stack([ty, tx, th, tw], axis=-1)


def match(similarity, matched_threshold, unmatched_threshold, force_match_for_each_row,
          gt_valid=None):
    """Argmax matching of anchors (rows) to ground-truth boxes (columns).

    Args:
      similarity: float32 [N anchors, M boxes] IoU.
      matched_threshold: IoU at or above which an anchor is positive.
      unmatched_threshold: IoU below which an anchor is negative (<= matched_threshold).
      force_match_for_each_row: every valid box claims its best anchor (the OD API
        calls the boxes rows; Model Garden calls them columns).
      gt_valid: optional bool [M]; False marks padding boxes that must match nothing.

    Returns:
      (matched_box int32 [N], indicator int32 [N] in {POSITIVE, NEGATIVE, IGNORED}).
    """
    if unmatched_threshold > matched_threshold:
        raise ValueError("expected unmatched_threshold <= matched_threshold, got {} > {}"
                         .format(unmatched_threshold, matched_threshold))
    matcher = box_matcher.BoxMatcher(
        [unmatched_threshold, matched_threshold], [NEGATIVE, IGNORED, POSITIVE],
        force_match_for_each_col=force_match_for_each_row)
    if gt_valid is None:
        return matcher(similarity)
    num_anchors = tf.shape(similarity)[0]
    similarity = tf.where(gt_valid[None, :], similarity, -1.0)
    # Model Garden force-matches every column, padding included; a sentinel anchor row
    # that only padding boxes prefer absorbs those forced matches and is then dropped.
    sentinel = tf.where(gt_valid, -1.0, 2.0)[None, :]
    matched, indicator = matcher(tf.concat([similarity, sentinel], axis=0))
    return matched[:num_anchors], indicator[:num_anchors]


def assign_targets(gt_boxes, gt_classes, anchors, num_classes, matched_threshold=0.5,
                   unmatched_threshold=0.5, force_match_for_each_row=True,
                   scales=box_coder.DEFAULT_SCALES, gt_valid=None):
    """Per-anchor SSD targets for one image.

    Args:
      gt_boxes: float32 [M, 4] normalized (ymin, xmin, ymax, xmax); M may be 0.
      gt_classes: int32 [M] 0-based class ids.
      anchors: float32 [N, 4] (ycenter, xcenter, height, width) from app.model.anchors.
      num_classes: C, classes without background.
      matched_threshold, unmatched_threshold, force_match_for_each_row: see `match`.
      scales: box coder (y, x, height, width) scales.
      gt_valid: optional bool [M]; False marks padding rows.

    Returns:
      dict of float32 tensors:
        cls_targets [N, C] one-hot of the matched class (all zeros for background),
        cls_weights [N] 1 for positive and negative anchors, 0 for ignored,
        box_targets [N, 4] (ty, tx, th, tw) for positives, zeros elsewhere,
        box_weights [N] 1 for positives.
    """
    gt_boxes = tf.convert_to_tensor(gt_boxes, tf.float32)
    gt_classes = tf.convert_to_tensor(gt_classes, tf.int32)
    anchors = tf.convert_to_tensor(anchors, tf.float32)
    if gt_boxes.shape.rank != 2 or gt_classes.shape.rank != 1 or anchors.shape.rank != 2:
        raise ValueError("expected gt_boxes [M, 4], gt_classes [M], anchors [N, 4]; got {}, {}, {}"
                         .format(gt_boxes.shape, gt_classes.shape, anchors.shape))
    similarity = iou_similarity.iou(anchors_to_corners(anchors), gt_boxes)  # [N, M]
    matched, indicator = match(similarity, matched_threshold, unmatched_threshold,
                               force_match_for_each_row, gt_valid)
    positive = tf.equal(indicator, POSITIVE)
    gather = target_gather.TargetGather()
    matched_boxes = gather(gt_boxes, matched)
    matched_classes = gather(gt_classes[:, None], matched)[:, 0]
    pos = tf.cast(positive, tf.float32)
    box_targets = encode_boxes(matched_boxes, anchors, scales) * pos[:, None]
    return {
        "cls_targets": tf.one_hot(matched_classes, num_classes) * pos[:, None],
        "cls_weights": tf.cast(tf.not_equal(indicator, IGNORED), tf.float32),
        "box_targets": box_targets,
        "box_weights": pos,
    }
