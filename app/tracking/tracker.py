"""SORT-style multi-object tracking of one source's detections (numpy, Python 3.7 / numpy 1.16).

Each track keeps a box state (centre x, centre y, width, height) in source-frame pixels and its
velocity per frame. Every frame the states are predicted one step ahead (constant velocity),
matched to the detections by IoU (greedy, highest IoU first, class-agnostic so a label flicker
keeps the track), and corrected with fixed alpha-beta gains: the steady-state form of SORT's
Kalman filter, which needs no covariance per track. A track is confirmed, and gets its id, after
`min_hits` matched frames; a tentative track that misses a frame is dropped; a confirmed track
ends after `max_age` frames without a match. Its label is the majority of its detections'
labels, each weighted by its score. Detections overlapping by more than DUPLICATE_IOU count as
one object (per-class NMS leaves one box per label on an object the model is unsure of), so two
real objects that overlap that much are tracked as one until they part.

All per-track state lives in arrays indexed by track row, so one frame is a few array ops
whatever the number of tracks.
"""

import collections

import numpy as np

from app.model.nms import iou_matrix

# Correction gains of the alpha-beta filter: position follows a detection by ALPHA of the
# residual, velocity by BETA of it. On the synthetic camera (shapes at 2-8 px a frame, box
# jitter of a few px) these kept boxes on their shapes through crossings.
ALPHA = 0.7
BETA = 0.3
# An unmatched detection overlapping a matched one by more than this is the same object again.
DUPLICATE_IOU = 0.7
_GAINS = np.array([ALPHA, BETA])  # of the state and of the velocity, in one array op

# One frame of the tracker. Rows are the confirmed live tracks (matched or coasting), by id.
#   ids: int64 [M] track ids (1, 2, ... in order of confirmation).
#   boxes: float32 [M, 4] pixels (x0, y0, x1, y1): the matched detection's box, else the prediction.
#   class_ids: int32 [M] majority label over the track's life (0-based).
#   scores: float32 [M] this frame's detection score, 0 while coasting.
#   matched: bool [M] True when a detection matched the track this frame.
#   start_times: float64 [M] time of the track's first detection (the `now` passed to update).
#   detection_ids: int64 [K] track id of each input detection, -1 if none is confirmed.
#   ended: int64 [E] ids of the tracks that ended this frame.
TrackFrame = collections.namedtuple(
    "TrackFrame", "ids boxes class_ids scores matched start_times detection_ids ended")


# (cx, cy, w, h) = (x0, y0, x1, y1) @ _TO_STATE; (x0, y0, x1, y1) = (cx, cy, w, h) @ _TO_CORNERS. One
# matrix product instead of a dozen column ops (numpy costs ~1 us a call on these few rows), and
# exact: each output sums two products by 1 or 0.5 (exact), so it is rounded once, as (x0 + x1) / 2 is.
_TO_STATE = np.array([[0.5, 0, -1, 0], [0, 0.5, 0, -1], [0.5, 0, 1, 0], [0, 0.5, 0, 1]])
_TO_CORNERS = np.array([[1, 0, 1, 0], [0, 1, 0, 1], [-0.5, 0, 0.5, 0], [0, -0.5, 0, 0.5]])
_LEAST_STATE = np.array([-np.inf, -np.inf, 0, 0])  # a negative width or height is drawn as 0


def corners_to_state(boxes):
    """float64 [K, 4] (cx, cy, w, h) of pixel boxes [K, 4] (x0, y0, x1, y1)."""
    return np.asarray(boxes, np.float64).reshape(-1, 4).dot(_TO_STATE)


def state_to_corners(state):
    """float32 [K, 4] pixel boxes (x0, y0, x1, y1) of states [K, 4] (cx, cy, w, h)."""
    return np.maximum(state, _LEAST_STATE).dot(_TO_CORNERS).astype(np.float32)


def merge_duplicates(boxes, scores, ious=None):
    """Groups detections of one object: per-class NMS leaves one box per label on an object the
    model is unsure of, overlapping by more than DUPLICATE_IOU. Greedy by score, like NMS.

    Args:
      boxes: float32 [K, 4] pixels (x0, y0, x1, y1).
      scores: float32 [K].
      ious: float32 [K, K] `iou_matrix(boxes, boxes)` when the caller has it already.

    Returns:
      (primary, parent): int64 [P] ascending indices of the highest-scoring box of each group,
      and int64 [K] the primary index each detection belongs to (itself for a primary).
    """
    over = (iou_matrix(boxes, boxes) if ious is None else ious) > DUPLICATE_IOU
    if np.count_nonzero(over) == len(boxes) and over.diagonal().all():  # the usual frame: no duplicates
        return np.arange(len(boxes)), np.arange(len(boxes))
    parent = np.full(len(boxes), -1, np.int64)
    for i in np.argsort(-scores, kind="mergesort"):
        if parent[i] < 0:
            parent[(parent < 0) & over[i]] = i  # i itself (IoU 1) included
    return np.flatnonzero(parent == np.arange(len(boxes))), parent


def greedy_match(iou, min_iou):
    """Pairs rows with columns by descending IoU, each at most once (ties: row-major order).

    Args:
      iou: float [T, D] IoU of track predictions (rows) with detections (columns).
      min_iou: least IoU of a pair, compared in iou's own precision.

    Returns:
      int64 [P, 2] (row, column) pairs.
    """
    least = float(iou.dtype.type(min_iou))  # as numpy would compare a float32 array with min_iou
    candidates = [(-value, r, c) for r, row in enumerate(iou.tolist()) for c, value in enumerate(row)
                  if value >= least]
    candidates.sort()  # by -IoU, ties in (row, column) order; python lists on a few tracks beat numpy calls
    used_rows, used_cols, pairs = set(), set(), []
    for _, r, c in candidates:
        if r not in used_rows and c not in used_cols:
            used_rows.add(r)
            used_cols.add(c)
            pairs.append((r, c))
    return np.array(pairs, np.int64).reshape(-1, 2)


class Tracker(object):
    """SORT-style tracker of one source.

    Args:
      num_classes: number of labels (class ids 0..num_classes-1).
      min_hits: matched frames before a track is confirmed (>= 1).
      max_age: frames a confirmed track may go unmatched before it ends (>= 0).
      min_iou: least IoU between a predicted box and a detection to match them, in (0, 1].
    """

    def __init__(self, num_classes, min_hits=3, max_age=15, min_iou=0.3):
        if num_classes < 1 or min_hits < 1 or max_age < 0 or not 0.0 < min_iou <= 1.0:
            raise ValueError("expected num_classes >= 1, min_hits >= 1, max_age >= 0, 0 < min_iou <= 1, "
                             "got {}, {}, {}, {}".format(num_classes, min_hits, max_age, min_iou))
        self.num_classes, self.min_hits, self.max_age, self.min_iou = num_classes, min_hits, max_age, min_iou
        self._next_id = 1
        self._motion = np.zeros((0, 2, 4), np.float64)  # [T, 2, 4]: state (cx, cy, w, h) and its velocity per frame
        self._ids = np.zeros(0, np.int64)          # 0 while tentative
        self._hits = np.zeros(0, np.int64)
        self._misses = np.zeros(0, np.int64)
        self._votes = np.zeros((0, num_classes), np.float64)  # summed scores per label
        self._start = np.zeros(0, np.float64)

    def __len__(self):
        """Number of live tracks, tentative ones included."""
        return len(self._ids)

    def update(self, boxes, class_ids, scores, now=0.0):
        """Advances every track by one frame with this frame's detections.

        Args:
          boxes: float [K, 4] detection boxes in source-frame pixels (x0, y0, x1, y1).
          class_ids: int [K] 0-based labels.
          scores: float [K] scores in [0, 1].
          now: the frame's time in seconds (any clock); becomes a new track's start time.

        Returns:
          A TrackFrame.
        """
        boxes, class_ids, scores = self._check(boxes, class_ids, scores)
        self._motion[:, 0] += self._motion[:, 1]  # predict: constant velocity
        primary, parent, rows, cols = self._match(boxes, scores)
        measured = corners_to_state(boxes)
        self._correct(rows, measured[cols])
        dead = self._age(rows)
        ended = self._ids[dead & (self._ids > 0)]
        detection_rows = self._detection_rows(measured, primary, parent, rows, cols, now)
        self._vote(detection_rows, class_ids, scores, parent is not None)
        if dead.any():
            alive = np.concatenate([~dead, np.ones(len(self._ids) - len(dead), bool)])
            detection_rows = (np.cumsum(alive) - 1)[detection_rows]  # matched and new rows never die
            self._keep(alive)
        self._confirm()
        if parent is None:
            return self._frame(boxes, scores, detection_rows, detection_rows, ended)
        return self._frame(boxes[primary], scores[primary], detection_rows[primary], detection_rows, ended)

    def _match(self, boxes, scores):
        """Merges duplicates, then matches the predictions with the primary detections.

        Returns:
          (primary, parent, rows, cols): merge_duplicates' primary and parent (None when no
          detection is a duplicate: primary is then 0..K-1 and nothing is indexed by it), and the
          matched track rows with their detection indices, int64 [P] each.
        """
        count = len(boxes)
        ious = iou_matrix(np.concatenate([boxes, state_to_corners(self._motion[:, 0])]), boxes)  # [K + T, K], one call
        primary, parent = merge_duplicates(boxes, scores, ious[:count])
        if len(primary) == count:
            pairs = greedy_match(ious[count:], self.min_iou)
            return primary, None, pairs[:, 0], pairs[:, 1]
        pairs = greedy_match(ious[count:, primary], self.min_iou)
        return primary, parent, pairs[:, 0], primary[pairs[:, 1]]

    def _detection_rows(self, measured, primary, parent, rows, cols, now):
        """int64 [K] track row of each detection: its match, else a new tentative track (a primary
        detection, state from `measured`), else its primary's (a duplicate)."""
        detection_rows = np.full(len(measured), -1, np.int64)
        detection_rows[cols] = rows
        fresh = primary[detection_rows[primary] < 0]
        if len(fresh):
            detection_rows[fresh] = self._spawn(measured[fresh], now)
        return detection_rows if parent is None else detection_rows[parent]

    def _check(self, boxes, class_ids, scores):
        boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
        class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        scores = np.asarray(scores, np.float32).reshape(-1)
        if len(class_ids) != len(boxes) or len(scores) != len(boxes):
            raise ValueError("boxes, class_ids and scores must have the same length, got {}, {}, {}"
                             .format(len(boxes), len(class_ids), len(scores)))
        ids = class_ids.tolist()  # python min/max: cheaper than two numpy reductions on a few values
        if ids and (min(ids) < 0 or max(ids) >= self.num_classes):
            raise ValueError("class_ids must be in 0..{}, got {}".format(self.num_classes - 1, ids))
        return boxes, class_ids, scores

    def _correct(self, rows, measured):
        """Alpha-beta correction of the matched tracks; a track's second hit sets its velocity."""
        motion = self._motion[rows]
        gains = np.where((self._hits[rows] == 1)[:, None], 1.0, _GAINS)  # [R, 2] state, velocity
        self._motion[rows] = motion + gains[:, :, None] * (measured - motion[:, 0])[:, None]
        self._hits[rows] += 1

    def _age(self, matched_rows):
        """Counts a miss on every unmatched track; returns bool [T]: the tracks that die now."""
        self._misses += 1
        self._misses[matched_rows] = 0
        return (self._misses > 0) & ((self._ids == 0) | (self._misses > self.max_age))

    def _vote(self, detection_rows, class_ids, scores, duplicates):
        """Adds each detection's score to its track's votes for its label (np.add.at only where
        two detections of a frame share a track, which fancy-index += would count once)."""
        if duplicates:
            np.add.at(self._votes, (detection_rows, class_ids), scores)
        else:
            self._votes[detection_rows, class_ids] += scores

    def _keep(self, mask):
        for name in ("_motion", "_ids", "_hits", "_misses", "_votes", "_start"):
            setattr(self, name, getattr(self, name)[mask])

    def _spawn(self, measured, now):
        """Appends a tentative track per state in `measured` (float64 [F, 4] cx, cy, w, h); returns their rows."""
        fresh = len(measured)
        rows = len(self._ids) + np.arange(fresh)
        self._motion = np.concatenate([self._motion, np.stack([measured, np.zeros((fresh, 4))], axis=1)])
        self._ids = np.concatenate([self._ids, np.zeros(fresh, np.int64)])
        self._hits = np.concatenate([self._hits, np.ones(fresh, np.int64)])
        self._misses = np.concatenate([self._misses, np.zeros(fresh, np.int64)])
        self._votes = np.concatenate([self._votes, np.zeros((fresh, self.num_classes))])
        self._start = np.concatenate([self._start, np.full(fresh, float(now))])
        return rows

    def _confirm(self):
        new = (self._ids == 0) & (self._hits >= self.min_hits)
        count = np.count_nonzero(new)
        if count:
            self._ids[new] = self._next_id + np.arange(count)
            self._next_id += count

    def _frame(self, boxes, scores, rows, detection_rows, ended):
        """The TrackFrame of the confirmed tracks; `boxes`, `scores` of the primary detections, on `rows`."""
        box = state_to_corners(self._motion[:, 0])
        score = np.zeros(len(self._ids), np.float32)
        matched = np.zeros(len(self._ids), bool)
        box[rows], score[rows], matched[rows] = boxes, scores, True
        ids = self._ids[detection_rows]
        labels = np.argmax(self._votes, axis=1).astype(np.int32)
        c = self._ids > 0
        return TrackFrame(self._ids[c], box[c], labels[c], score[c], matched[c], self._start[c],
                          np.where(ids > 0, ids, -1), ended)
