"""Greedy non-maximum suppression in numpy: single-class, per-class and class-agnostic.

Boxes are normalized [ymin, xmin, ymax, xmax] (any consistent units work). A box
is suppressed when its IoU with an already kept box is strictly greater than
`iou_threshold`, as in `tf.image.non_max_suppression`. Ties in score keep the
lower index first (stable sort), so results are deterministic.
"""

import collections

import numpy as np


def _check(boxes, scores):
    boxes = np.asarray(boxes, dtype=np.float32)
    scores = np.asarray(scores, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError("boxes must be [K, 4], got shape {}".format(boxes.shape))
    if scores.shape != (boxes.shape[0],):
        raise ValueError("scores must be [{}], got shape {}".format(boxes.shape[0], scores.shape))
    return boxes, scores


def _check_limits(iou_threshold, **limits):
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError("iou_threshold must be in [0, 1], got {!r}".format(iou_threshold))
    for name, value in limits.items():
        if int(value) != value or value < 0:
            raise ValueError("{} must be an integer >= 0, got {!r}".format(name, value))


# Up to this many boxes, one K x K IoU matrix (4 MB at the limit) replaces an IoU row per kept box.
MATRIX_LIMIT = 1024


def iou_matrix(boxes_a, boxes_b):
    """Pairwise IoU.

    Args:
      boxes_a: float32 [A, 4] (ymin, xmin, ymax, xmax).
      boxes_b: float32 [B, 4] (ymin, xmin, ymax, xmax).

    Returns:
      float32 [A, B]; 0 where the union is empty. float64 when either input is float64 (the
      tracker's pairs, app.tracking.pairs, computed as its python loop computes them).
    """
    a, b = boxes_a[:, None, :], boxes_b[None, :, :]
    inter = (np.maximum(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0)
             * np.maximum(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0))
    area_a = np.maximum(boxes_a[:, 2] - boxes_a[:, 0], 0) * np.maximum(boxes_a[:, 3] - boxes_a[:, 1], 0)
    area_b = np.maximum(boxes_b[:, 2] - boxes_b[:, 0], 0) * np.maximum(boxes_b[:, 3] - boxes_b[:, 1], 0)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return iou.astype(np.float64 if np.float64 in (boxes_a.dtype, boxes_b.dtype) else np.float32)


def iou_one_to_many(box, boxes):
    """IoU of one box with each of `boxes`.

    Args:
      box: float [4] (ymin, xmin, ymax, xmax).
      boxes: float [K, 4] (ymin, xmin, ymax, xmax).

    Returns:
      float32 [K]; 0 where the union is empty.
    """
    return iou_matrix(np.asarray(box, np.float32)[None], np.asarray(boxes, np.float32))[0]


def _greedy(boxes, order, iou_threshold, max_output, ious=None):
    """Greedy suppression over `order` (indices by descending score), IoUs from `ious` if given."""
    keep = []
    while order.size and len(keep) < max_output:
        best = order[0]
        keep.append(best)
        rest = order[1:]
        overlap = ious[best, rest] if ious is not None else iou_one_to_many(boxes[best], boxes[rest])
        order = rest[overlap <= iou_threshold]
    return np.array(keep, dtype=np.int64)


def _all_ious(boxes):
    """The K x K IoU matrix when K is at most MATRIX_LIMIT, else None (rows are computed as needed)."""
    return iou_matrix(boxes, boxes) if len(boxes) <= MATRIX_LIMIT else None


def nms(boxes, scores, iou_threshold, max_output):
    """Greedy NMS over boxes of one class.

    Args:
      boxes: float [K, 4] (ymin, xmin, ymax, xmax).
      scores: float [K].
      iou_threshold: IoU in [0, 1] above which a lower-scored box is dropped.
      max_output: most indices returned, >= 0.

    Returns:
      int64 [M] indices into `boxes`, M <= max_output, by descending score.
    """
    boxes, scores = _check(boxes, scores)
    _check_limits(iou_threshold, max_output=max_output)
    order = np.argsort(-scores, kind="mergesort")
    return _greedy(boxes, order, iou_threshold, max_output, _all_ious(boxes))


def per_class_nms(boxes, scores, class_ids, iou_threshold, max_per_class, max_total, class_agnostic=False):
    """NMS run separately for each class (or across classes), then merged and capped.

    Args:
      boxes: float [K, 4] (ymin, xmin, ymax, xmax).
      scores: float [K].
      class_ids: int [K] class of each box.
      iou_threshold: IoU in [0, 1] above which a lower-scored box of the same class is dropped.
      max_per_class: most boxes kept per class, >= 0.
      max_total: most boxes kept overall, >= 0.
      class_agnostic: suppress across classes too (the OD API's use_class_agnostic_nms): a box
        drops any lower-scored box it overlaps, whatever its class, so an object seen as two
        classes keeps only the likelier one. `max_per_class` still caps each class.

    Returns:
      int64 [M] indices into `boxes`, M <= max_total, by descending score.
    """
    boxes, scores = _check(boxes, scores)
    class_ids = np.asarray(class_ids)
    if class_ids.shape != scores.shape:
        raise ValueError("class_ids must be [{}], got shape {}".format(len(scores), class_ids.shape))
    _check_limits(iou_threshold, max_per_class=max_per_class, max_total=max_total)
    if class_agnostic:
        survivors = nms(boxes, scores, iou_threshold, len(scores))  # by descending score
        counts = collections.Counter()
        kept = []
        for index in survivors:
            if counts[class_ids[index]] < max_per_class:
                counts[class_ids[index]] += 1
                kept.append(index)
        return np.array(kept[:int(max_total)], dtype=np.int64)
    ious = _all_ious(boxes)
    kept = []
    for cls in np.unique(class_ids):
        members = np.nonzero(class_ids == cls)[0]
        order = members[np.argsort(-scores[members], kind="mergesort")]
        kept.append(_greedy(boxes, order, iou_threshold, max_per_class, ious))
    if not kept:
        return np.zeros((0,), dtype=np.int64)
    kept = np.concatenate(kept)
    # Sort by score, then by index so equal scores come out in a fixed order.
    order = np.lexsort((kept, -scores[kept]))
    return kept[order][:int(max_total)].astype(np.int64)
