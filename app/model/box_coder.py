"""The OD API `faster_rcnn_box_coder`, in numpy: boxes <-> offsets relative to anchors.

Boxes are normalized [ymin, xmin, ymax, xmax]; anchors are (ycenter, xcenter,
height, width) as `app.model.anchors` makes them; codes are (ty, tx, th, tw):
  ty = (yc - yc_a) / h_a * y_scale      tx = (xc - xc_a) / w_a * x_scale
  th = log(h / h_a) * height_scale      tw = log(w / w_a) * width_scale
"""

import numpy as np

DEFAULT_SCALES = (10.0, 10.0, 5.0, 5.0)  # y, x, height, width

# Added to every size before division/log in encode, as the OD API does, so a
# zero-size box encodes to a large finite value instead of -inf.
EPSILON = 1e-8


def _check_pairs(a, b, a_name, b_name):
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    if a.ndim != 2 or a.shape[1] != 4:
        raise ValueError("{} must be [N, 4], got shape {}".format(a_name, a.shape))
    if b.shape != a.shape:
        raise ValueError("{} must have the shape of {} {}, got {}".format(
            b_name, a_name, a.shape, b.shape))
    return a, b


def _check_scales(scales):
    scales = np.asarray(scales, dtype=np.float32)
    if scales.shape != (4,) or np.any(scales <= 0):
        raise ValueError("scales must be 4 positive numbers (y, x, height, width), got {!r}"
                         .format(scales))
    return scales


def encode(boxes, anchors, scales=DEFAULT_SCALES):
    """Encodes boxes relative to their anchors.

    Args:
      boxes: float [N, 4] normalized (ymin, xmin, ymax, xmax).
      anchors: float [N, 4] (ycenter, xcenter, height, width), normalized.
      scales: (y, x, height, width) scale factors.

    Returns:
      float32 [N, 4] codes (ty, tx, th, tw).
    """
    boxes, anchors = _check_pairs(boxes, anchors, "boxes", "anchors")
    scales = _check_scales(scales)
    h = boxes[:, 2] - boxes[:, 0] + EPSILON
    w = boxes[:, 3] - boxes[:, 1] + EPSILON
    yc = (boxes[:, 0] + boxes[:, 2]) / 2.0
    xc = (boxes[:, 1] + boxes[:, 3]) / 2.0
    ha = anchors[:, 2] + EPSILON
    wa = anchors[:, 3] + EPSILON
    ty = (yc - anchors[:, 0]) / ha * scales[0]
    tx = (xc - anchors[:, 1]) / wa * scales[1]
    th = np.log(h / ha) * scales[2]
    tw = np.log(w / wa) * scales[3]
    return np.stack([ty, tx, th, tw], axis=1).astype(np.float32)


def decode(rel_codes, anchors, scales=DEFAULT_SCALES):
    """Decodes codes back to boxes; the inverse of `encode`.

    Args:
      rel_codes: float [N, 4] codes (ty, tx, th, tw).
      anchors: float [N, 4] (ycenter, xcenter, height, width), normalized.
      scales: (y, x, height, width) scale factors.

    Returns:
      float32 [N, 4] normalized (ymin, xmin, ymax, xmax), not clipped.
    """
    codes, anchors = _check_pairs(rel_codes, anchors, "rel_codes", "anchors")
    scales = _check_scales(scales)
    codes = codes / scales
    h = np.exp(codes[:, 2]) * anchors[:, 2]
    w = np.exp(codes[:, 3]) * anchors[:, 3]
    yc = codes[:, 0] * anchors[:, 2] + anchors[:, 0]
    xc = codes[:, 1] * anchors[:, 3] + anchors[:, 1]
    return np.stack([yc - h / 2.0, xc - w / 2.0, yc + h / 2.0, xc + w / 2.0],
                    axis=1).astype(np.float32)
