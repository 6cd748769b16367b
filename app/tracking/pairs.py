"""Box pairs that overlap by at least an IoU, and greedy one-to-one matching of them.

The tracker asks for the same thing twice a frame (detections that duplicate each other; track
predictions against detections). A frame has a few boxes, and on a thread woken every 33 ms each
numpy call costs several us with its caches cold, so up to PYTHON_PAIRS pairs a plain python loop
on lists of floats does it; beyond, numpy (`app.model.nms.iou_matrix` in float64). Both compute
the IoU in float64 with the same operations in the same order, so they give the same pairs and
the same values.
"""

import numpy as np

from app.model.nms import iou_matrix

# Most box pairs done in python: up to here python was faster both back to back and on a thread
# woken every 33 ms (8 x 8 pairs: 4.6 against numpy's 20 us, 21 against 188 us woken; 16 x 16:
# 16 against 24 us); at 24 x 24 numpy was faster back to back (29 against 34 us).
PYTHON_PAIRS = 256


def iou_pairs(boxes_a, boxes_b, least):
    """The pairs of boxes with IoU >= `least`.

    Args:
      boxes_a: [A] sequences (x0, y0, x1, y1) of python floats (any units; (ymin, xmin, ymax,
        xmax) works alike).
      boxes_b: [B] sequences, the same.
      least: the least IoU, > 0 (a pair that does not overlap never qualifies).

    Returns:
      list of (iou, i, j) tuples in row-major (i, j) order: float64 IoU, index into boxes_a,
      index into boxes_b.
    """
    if len(boxes_a) * len(boxes_b) <= PYTHON_PAIRS:
        return _python_pairs(boxes_a, boxes_b, least, False)
    return _numpy_pairs(boxes_a, boxes_b, least, False)


def iou_pairs_within(boxes, least):
    """`iou_pairs(boxes, boxes, least)` without a box's pair with itself or the (j, i) twin of (i, j):
    the pairs i < j, row-major."""
    if len(boxes) * (len(boxes) - 1) // 2 <= PYTHON_PAIRS:
        return _python_pairs(boxes, boxes, least, True)
    return _numpy_pairs(boxes, boxes, least, True)


def _python_pairs(boxes_a, boxes_b, least, upper):
    """`iou_pairs` in python; `upper`: boxes_b is boxes_a and only pairs j > i are wanted."""
    found = []
    for i, (ax0, ay0, ax1, ay1) in enumerate(boxes_a):
        first = i + 1 if upper else 0
        for j, (bx0, by0, bx1, by1) in enumerate(boxes_b[first:], first):
            width = (ax1 if ax1 < bx1 else bx1) - (ax0 if ax0 > bx0 else bx0)
            if width > 0:  # most pairs of a frame do not overlap: no more work on them
                height = (ay1 if ay1 < by1 else by1) - (ay0 if ay0 > by0 else by0)
                if height > 0:  # then both boxes' sides are > 0 too: their areas need no clamp
                    inter = width * height
                    iou = inter / ((ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - inter)
                    if iou >= least:
                        found.append((iou, i, j))
    return found


def _numpy_pairs(boxes_a, boxes_b, least, upper):
    """`iou_pairs` in numpy (float64, as the python loop); `upper` as in `_python_pairs`."""
    iou = iou_matrix(np.array(boxes_a, np.float64).reshape(-1, 4), np.array(boxes_b, np.float64).reshape(-1, 4))
    hit = iou >= least
    rows, cols = np.nonzero(np.triu(hit, 1) if upper else hit)
    return list(zip(iou[rows, cols].tolist(), rows.tolist(), cols.tolist()))


def greedy_pairs(candidates):
    """Pairs rows with columns by descending IoU, each at most once.

    Args:
      candidates: (iou, row, column) tuples in row-major order (as `iou_pairs` gives them).

    Returns:
      list of (row, column): the highest IoU first, ties in row-major order.
    """
    used_rows, used_cols, pairs = set(), set(), []
    for _, r, c in sorted(candidates, key=_descending_iou):  # a stable sort: ties stay row-major
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return pairs


def _descending_iou(candidate):
    return -candidate[0]
