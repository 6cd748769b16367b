"""SORT-style multi-object tracking of one source's detections (Python 3.7 / numpy 1.16).

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

A frame holds a few detections and tracks, and the output thread that runs the tracker sleeps
33 ms between frames, so every numpy call costs several us with cold caches. The tracks are
therefore python objects and a frame is a loop over python floats, with the arithmetic the arrays
had (float64 states, float32 detection boxes). Predicted boxes are matched in float64 (the arrays
rounded them to float32 first: the IoUs differ in the 8th digit, and matches did not, over 3 x 2000
frames). The one part that grows with the square of the boxes, their IoU pairs, goes to numpy for
large frames (app.tracking.pairs). `update` takes and gives arrays; `track` does the same on
python lists (the object stage's).
"""

import collections

import numpy as np

from app.tracking.floats import listed
from app.tracking.pairs import greedy_pairs, iou_pairs, iou_pairs_within

# Correction gains of the alpha-beta filter: position follows a detection by ALPHA of the
# residual, velocity by BETA of it. On the synthetic camera (shapes at 2-8 px a frame, box
# jitter of a few px) these kept boxes on their shapes through crossings.
ALPHA = 0.7
BETA = 0.3
# An unmatched detection overlapping a matched one by more than this is the same object again.
DUPLICATE_IOU = 0.7

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
# The same fields as python lists (`Tracker.track`); a box is [x0, y0, x1, y1]: the detection's float32
# values when matched, else the prediction's float64 values (TrackFrame rounds them to float32).
TrackLists = collections.namedtuple("TrackLists", TrackFrame._fields)
_DTYPES = (np.int64, np.float32, np.int32, np.float32, bool, np.float64, np.int64, np.int64)


def state_of(box):
    """[cx, cy, w, h] (float64) of a pixel box (x0, y0, x1, y1) of python floats."""
    x0, y0, x1, y1 = box
    return [(x0 + x1) * 0.5, (y0 + y1) * 0.5, x1 - x0, y1 - y0]


def corners_of(state):
    """[x0, y0, x1, y1] (float64) of a state (cx, cy, w, h); a negative width or height is drawn as 0."""
    cx, cy, w, h = state
    half_w, half_h = (w if w > 0 else 0.0) * 0.5, (h if h > 0 else 0.0) * 0.5
    return [cx - half_w, cy - half_h, cx + half_w, cy + half_h]


def corners_to_state(boxes):
    """float64 [K, 4] (cx, cy, w, h) of pixel boxes [K, 4] (x0, y0, x1, y1)."""
    return np.array([state_of(box) for box in listed(boxes, np.float64, 4)], np.float64).reshape(-1, 4)


def state_to_corners(state):
    """float32 [K, 4] pixel boxes (x0, y0, x1, y1) of states [K, 4] (cx, cy, w, h)."""
    return np.array([corners_of(s) for s in listed(state, np.float64, 4)], np.float32).reshape(-1, 4)


def duplicate_parents(boxes, scores):
    """Groups detections of one object: per-class NMS leaves one box per label on an object the
    model is unsure of, overlapping by more than DUPLICATE_IOU. Greedy by score, like NMS.

    Args:
      boxes: [K] pixel boxes (x0, y0, x1, y1) of python floats.
      scores: [K] python floats.

    Returns:
      [K] ints: the highest-scoring detection of each one's group (itself for a primary), or
      None when no detection duplicates another (the usual frame).
    """
    over = collections.defaultdict(list)
    for iou, i, j in iou_pairs_within(boxes, DUPLICATE_IOU):
        if iou > DUPLICATE_IOU:
            over[i].append(j)
            over[j].append(i)
    if not over:
        return None
    parent = [None] * len(boxes)
    for i in sorted(range(len(boxes)), key=scores.__getitem__, reverse=True):  # stable: ties by index
        if parent[i] is None:
            parent[i] = i
            for j in over[i]:
                if parent[j] is None:
                    parent[j] = i
    return parent


def merge_duplicates(boxes, scores):
    """`duplicate_parents` of arrays: boxes float [K, 4] pixels (x0, y0, x1, y1), scores float [K].

    Returns:
      (primary, parent): int64 [P] ascending indices of the highest-scoring box of each group,
      and int64 [K] the primary index each detection belongs to (itself for a primary).
    """
    parent = duplicate_parents(listed(boxes, np.float32, 4), listed(scores, np.float32))
    parent = list(range(len(scores))) if parent is None else parent
    return np.array([k for k, p in enumerate(parent) if p == k], np.int64), np.array(parent, np.int64)


def greedy_match(iou, min_iou):
    """Pairs rows with columns by descending IoU, each at most once (ties: row-major order).

    Args:
      iou: float [T, D] IoU of track predictions (rows) with detections (columns).
      min_iou: least IoU of a pair, compared in iou's own precision.

    Returns:
      int64 [P, 2] (row, column) pairs.
    """
    least = float(iou.dtype.type(min_iou))  # as numpy would compare a float32 array with min_iou
    candidates = [(value, r, c) for r, row in enumerate(iou.tolist()) for c, value in enumerate(row)
                  if value >= least]
    return np.array(greedy_pairs(candidates), np.int64).reshape(-1, 2)


class _Track(object):
    """One track: its state and velocity (lists of 4 float64 python floats) and counters."""
    __slots__ = ("state", "velocity", "id", "hits", "misses", "votes", "label", "start", "box", "score")

    def __init__(self, box, score, num_classes, start):
        self.state, self.velocity = state_of(box), [0.0] * 4
        self.id, self.hits, self.misses = 0, 1, 0  # id 0 while tentative; misses: frames since a match
        self.votes, self.label = [0.0] * num_classes, 0   # summed scores per label; their (first) argmax
        self.start = start
        self.box, self.score = box, score  # this frame's: the matched detection's, else the prediction and 0

    def predict(self):
        """One frame ahead at constant velocity, unmatched until `correct`; returns the box (float64)."""
        (s0, s1, s2, s3), (v0, v1, v2, v3) = self.state, self.velocity
        self.state = [s0 + v0, s1 + v1, s2 + v2, s3 + v3]
        self.misses += 1
        self.box, self.score = corners_of(self.state), 0.0
        return self.box

    def correct(self, box, score):
        """Alpha-beta correction towards a detection (box of python floats); the second hit sets the velocity."""
        gain, velocity_gain = (1.0, 1.0) if self.hits == 1 else (ALPHA, BETA)
        (s0, s1, s2, s3), (v0, v1, v2, v3) = self.state, self.velocity
        m0, m1, m2, m3 = state_of(box)
        r0, r1, r2, r3 = m0 - s0, m1 - s1, m2 - s2, m3 - s3  # written out: 3x faster than a loop over 4
        self.state = [s0 + gain * r0, s1 + gain * r1, s2 + gain * r2, s3 + gain * r3]
        self.velocity = [v0 + velocity_gain * r0, v1 + velocity_gain * r1, v2 + velocity_gain * r2,
                         v3 + velocity_gain * r3]
        self.hits, self.misses, self.box, self.score = self.hits + 1, 0, box, score

    def vote(self, class_id, score):
        """Adds `score` to the votes for `class_id`; only that label can become the majority."""
        votes = self.votes
        votes[class_id] += score
        if score < 0:  # (not from a detector) a falling vote may hand the majority to any label
            self.label = votes.index(max(votes))
        elif votes[class_id] > votes[self.label] or (votes[class_id] == votes[self.label] and class_id < self.label):
            self.label = class_id


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
        self._tracks = []  # _Track, in order of creation

    def __len__(self):
        """Number of live tracks, tentative ones included."""
        return len(self._tracks)

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
        found = self.track(listed(boxes, np.float32, 4), listed(class_ids, np.int64), listed(scores, np.float32), now)
        frame = [np.array(values, dtype) for values, dtype in zip(found, _DTYPES)]
        frame[1] = frame[1].reshape(-1, 4)
        return TrackFrame(*frame)

    def track(self, boxes, class_ids, scores, now=0.0):
        """`update` on python values: boxes [K] lists (x0, y0, x1, y1) of float32 values (pixels),
        class_ids [K] ints, scores [K] float32 values; returns TrackLists."""
        self._check(boxes, class_ids, scores)
        predicted = [track.predict() for track in self._tracks]
        parent = duplicate_parents(boxes, scores)
        candidates = iou_pairs(predicted, boxes, self.min_iou)
        if parent is not None:  # a duplicate is matched through its primary only
            candidates = [c for c in candidates if parent[c[2]] == c[2]]
        owner = [None] * len(boxes)  # the track of each primary detection
        for r, k in greedy_pairs(candidates):
            owner[k] = self._tracks[r]
            owner[k].correct(boxes[k], scores[k])
        ended = self._drop_dead()
        for k, track in enumerate(owner):
            if track is None and (parent is None or parent[k] == k):
                owner[k] = self._spawn(boxes[k], scores[k], now)
        owners = owner if parent is None else [owner[p] for p in parent]
        for track, class_id, score in zip(owners, class_ids, scores):
            track.vote(class_id, score)
        self._confirm()
        return self._lists(owners, ended)

    def _check(self, boxes, class_ids, scores):
        if len(class_ids) != len(boxes) or len(scores) != len(boxes):
            raise ValueError("boxes, class_ids and scores must have the same length, got {}, {}, {}"
                             .format(len(boxes), len(class_ids), len(scores)))
        if class_ids and (min(class_ids) < 0 or max(class_ids) >= self.num_classes):
            raise ValueError("class_ids must be in 0..{}, got {}".format(self.num_classes - 1, list(class_ids)))

    def _drop_dead(self):
        """Drops the unmatched tentative tracks and those unmatched for more than max_age frames;
        returns the ids of the confirmed ones among them."""
        alive, ended = [], []
        for track in self._tracks:
            if track.misses and (not track.id or track.misses > self.max_age):
                if track.id:
                    ended.append(track.id)
            else:
                alive.append(track)
        self._tracks = alive
        return ended

    def _spawn(self, box, score, now):
        """A new tentative track on a detection (its box: python floats) at time `now`."""
        track = _Track(box, score, self.num_classes, float(now))
        self._tracks.append(track)
        return track

    def _confirm(self):
        for track in self._tracks:
            if not track.id and track.hits >= self.min_hits:
                track.id, self._next_id = self._next_id, self._next_id + 1

    def _lists(self, owners, ended):
        """TrackLists of the confirmed tracks; `owners`: the track of each detection."""
        tracks = [track for track in self._tracks if track.id]
        return TrackLists([t.id for t in tracks], [t.box for t in tracks], [t.label for t in tracks],
                          [t.score for t in tracks], [t.misses == 0 for t in tracks], [t.start for t in tracks],
                          [t.id or -1 for t in owners], ended)
