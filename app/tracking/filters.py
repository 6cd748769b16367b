"""Per-source detection filters: labels to keep and per-label min_score, min_area, max_area.

They run on a frame's detections before the tracker (Frigate's order), so a filtered box never
starts or feeds a track. Areas are in source-frame pixels (box width x height).
"""

import collections

import numpy as np

from app.tracking.floats import listed
from app.tracking.zones import label_ids

# Tuples of python values per class id: keep (bool), min_score, min_area, max_area (inf = no limit).
# Plain python: a frame has a few detections, for which a loop is cheaper than a dozen numpy calls.
Rules = collections.namedtuple("Rules", "keep min_score min_area max_area")


def make_rules(source, label_names, where):
    """Rules of one source.

    Args:
      source: app.config.SourceObjectsConfig.
      label_names: the model's labels in class-id order.
      where: the source's dotted key for messages.

    Returns:
      Rules with one entry per label. An unknown label is a UserError naming its key.
    """
    count = len(label_names)
    keep = np.zeros(count, bool) if source.labels else np.ones(count, bool)
    keep[label_ids(source.labels, label_names, where + ".labels")] = True
    min_score, min_area = np.zeros(count), np.zeros(count)
    max_area = np.full(count, np.inf)
    for name, rule in source.filters.items():
        i = label_ids([name], label_names, where + ".filters")[0]
        min_score[i], min_area[i] = rule.min_score, rule.min_area
        max_area[i] = rule.max_area if rule.max_area > 0 else np.inf
    return Rules(*(tuple(values.tolist()) for values in (keep, min_score, min_area, max_area)))


def keep_mask(rules, boxes, class_ids, scores):
    """bool [K]: the detections that pass.

    Args:
      rules: Rules.
      boxes: float [K, 4] pixels (x0, y0, x1, y1).
      class_ids: int [K] 0-based; ids without a label are dropped.
      scores: float [K].
    """
    return np.array(kept(rules, listed(boxes, np.float64, 4), listed(class_ids, np.int64), listed(scores, np.float64)),
                    bool)


def kept(rules, boxes, class_ids, scores):
    """`keep_mask` on python values: boxes [K] lists (x0, y0, x1, y1), class_ids [K] ints, scores
    [K] floats; returns [K] bools (areas in float64, as the values are)."""
    count = len(rules.keep)
    return [0 <= c < count and rules.keep[c] and s >= rules.min_score[c]
            and rules.min_area[c] <= (b[2] - b[0]) * (b[3] - b[1]) <= rules.max_area[c]
            for b, c, s in zip(boxes, class_ids, scores)]
