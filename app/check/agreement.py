"""Detection-level agreement between two detectors on the same frames.

Export's fidelity gate and the app's float-reference check both ask the same
question: does the live (uint8) model see the same objects as its float twin?
A detection of one agrees with a detection of the other when they have the same
class and IoU >= a threshold; matching is greedy, highest score first, one to one.

agreement = 2 * matched / (len(a) + len(b)), and 1.0 when both are empty, so
missing boxes and extra boxes both lower it. numpy only (runs on the device).
"""

import numpy as np


def box_iou(boxes_a, boxes_b):
    """Pairwise IoU.

    Args:
      boxes_a: float [A, 4] normalized (ymin, xmin, ymax, xmax).
      boxes_b: float [B, 4] same format.

    Returns:
      float32 [A, B] IoU in [0, 1].
    """
    a = np.asarray(boxes_a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(boxes_b, dtype=np.float32).reshape(-1, 4)
    ymin = np.maximum(a[:, None, 0], b[None, :, 0])
    xmin = np.maximum(a[:, None, 1], b[None, :, 1])
    ymax = np.minimum(a[:, None, 2], b[None, :, 2])
    xmax = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ymax - ymin, 0, None) * np.clip(xmax - xmin, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0).astype(np.float32)


def matched_pairs(dets_a, dets_b, iou=0.5):
    """One-to-one same-class matches with IoU >= `iou`, greedy by score of `dets_a`.

    Args:
      dets_a, dets_b: Detections-like (boxes [K,4] normalized yxyx, scores [K], class_ids [K]).
      iou: IoU threshold in (0, 1].

    Returns:
      list of (index into a, index into b), in the order of a's scores, highest first.
    """
    if not 0.0 < iou <= 1.0:
        raise ValueError("iou must be in (0, 1], got {!r}".format(iou))
    if len(dets_a.scores) == 0 or len(dets_b.scores) == 0:
        return []
    overlaps = box_iou(dets_a.boxes, dets_b.boxes)
    same_class = (np.asarray(dets_a.class_ids)[:, None] == np.asarray(dets_b.class_ids)[None, :])
    overlaps = np.where(same_class, overlaps, -1.0)
    taken = np.zeros(overlaps.shape[1], dtype=bool)
    pairs = []
    for row in np.argsort(-np.asarray(dets_a.scores), kind="stable"):
        candidates = np.where(taken, -1.0, overlaps[row])
        best = int(np.argmax(candidates))
        if candidates[best] >= iou:
            taken[best] = True
            pairs.append((int(row), best))
    return pairs


def match_count(dets_a, dets_b, iou=0.5):
    """Number of `matched_pairs`: 0 <= matched <= min(len(a), len(b))."""
    return len(matched_pairs(dets_a, dets_b, iou))


def agreement(dets_a, dets_b, iou=0.5):
    """Agreement of two detectors on one frame, in [0, 1] (1.0 when both found nothing).

    Args:
      dets_a, dets_b: Detections-like for the same frame.
      iou: IoU threshold for a match.

    Returns:
      float 2 * matched / (len(a) + len(b)).
    """
    total = len(dets_a.scores) + len(dets_b.scores)
    if total == 0:
        return 1.0
    return 2.0 * match_count(dets_a, dets_b, iou) / total


def pooled_agreement(list_a, list_b, iou=0.5):
    """Agreement over many frames: all matches over all detections (not a mean of ratios).

    Args:
      list_a, list_b: equally long sequences of Detections-like, frame by frame.
      iou: IoU threshold for a match.

    Returns:
      float in [0, 1]; 1.0 when neither detector found anything anywhere.
    """
    if len(list_a) != len(list_b):
        raise ValueError("expected equally many frames, got {} and {}".format(len(list_a), len(list_b)))
    matched = sum(match_count(a, b, iou) for a, b in zip(list_a, list_b))
    total = sum(len(a.scores) + len(b.scores) for a, b in zip(list_a, list_b))
    return 1.0 if total == 0 else 2.0 * matched / total
