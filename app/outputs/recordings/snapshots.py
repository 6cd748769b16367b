"""Snapshots: each tracked object's best-scoring frame as a JPEG with its box drawn, and a clean copy.

A pipeline sink (`snapshots:` in config.yaml). On the output thread it only keeps a reference
to the frame where an object's detection scored best so far (frames are never reused by the
capture thread) and queues a write of the drawn JPEG: at once for an object's first frame, then
at most every `min_interval_s` (of frame time) while the score improves; at `end` the last one,
with the clean copy (written once per object: a clean JPEG per rewrite doubled the encoding
cost). Drawing, JPEG encoding and the atomic writes run on a BackgroundWriter thread.

Files: `<dir>/<source>/<source>-<start_time>-<id>.jpg` (box, label and score drawn) and
`...-<id>-clean.jpg`, where `<source>` is app.outputs.files.safe_name of the source and
`<start_time>` the object's start time in seconds with 3 decimals, so the name follows from
the object event alone. An event's `snapshot` field is that path once the first JPEG is on disk
and null before: a `new` event (its JPEG is written just after, on the writer thread) and,
when the disk is full or the writer is behind, a later one too. A path in an event always names
a complete file; its content may still be replaced (atomically) by a better frame, the last time
just after `end`, when the clean copy appears. Put this sink before every sink that reads object events.
"""

import os
from collections import namedtuple

import numpy as np

from app.outputs import files
from app.outputs.recordings.retention import Retention
from app.outputs.recordings.writer import BackgroundWriter

# An object's best frame. image: the raw BGR frame uint8 [H, W, 3]; box: pixels (x0, y0, x1, y1).
BestFrame = namedtuple("BestFrame", "image box class_id label score")
# A queued write of `frame` for `best` (_Best); drawn / clean: write the drawn JPEG / the clean copy.
# A job refers to its _Best but not the reverse: a cycle would keep each ended object's frame
# alive until a full garbage collection (20k frames grew RSS by 1.7 MB per 1000 frames).
SnapshotJob = namedtuple("SnapshotJob", "kind best frame drawn clean")


def snapshot_name(source, start_time, track_id):
    """The path of an object's snapshot under the snapshots folder: "<source>/<source>-<start>-<id>.jpg"."""
    safe = files.safe_name(source)
    return os.path.join(safe, "{}-{:.3f}-{}.jpg".format(safe, float(start_time), int(track_id)))


def clean_name(path):
    """The clean copy's path of a snapshot path ("x.jpg" -> "x-clean.jpg")."""
    return path[:-len(".jpg")] + "-clean.jpg"


def check_settings(settings, where):
    """The snapshots folder (made if missing) after checking the keys; UserError naming the key otherwise."""
    return files.checked_folder(settings, where, "snapshots", (
        ("quality", 1 <= settings.quality <= 100, "in 1..100"),
        ("min_interval_s", settings.min_interval_s >= 0, ">= 0"),
        ("retain_days", settings.retain_days >= 0, ">= 0"),
        ("max_total_mb", settings.max_total_mb >= 0, ">= 0")))


class _Best(object):
    """One live object's best frame so far and whether its JPEG is on disk."""

    def __init__(self, path):
        self.path, self.score = path, -1.0
        self.frame, self.pending = None, False  # the BestFrame; not written yet
        self.submitted_at = None
        self.on_disk = False  # set by the writer thread once the file is complete


class Snapshots(object):
    """The snapshot sink.

    Args:
      settings: app.config.SnapshotsConfig.
      where: the config file name for messages.

    Raises:
      UserError: an out-of-range key, or snapshots.dir cannot be made or written.
    """

    check = staticmethod(check_settings)  # LiveApp checks the section at start, before building anything

    def __init__(self, settings, where):
        self.folder = check_settings(settings, where)
        self._settings = settings
        self.retention = Retention(self.folder, settings.retain_days, settings.max_total_mb)
        self.writer = BackgroundWriter("edgedet-snapshots", self._write, idle=self.retention.maybe_run)
        self._live = {}  # (source, id) -> _Best
        self.written = 0

    def write(self, result):
        objects = result.objects
        if objects is None:
            return
        now, scores = result.time, result.detections.scores
        for row in np.flatnonzero(objects.detection_ids >= 0):  # detections of confirmed objects
            track_id = int(objects.detection_ids[row])
            best = self._live.get((result.source, track_id)) or self._start(result, track_id)
            if float(scores[row]) > best.score:  # strictly better: a frame is kept once per improvement
                best.score = float(scores[row])
                best.frame = BestFrame(result.raw, result.boxes[row], int(result.detections.class_ids[row]),
                                       result.labels[row], best.score)
                best.pending = True
            self._submit(best, now)

    def _start(self, result, track_id):
        start = next(o["start_time"] for o in result.objects.objects if o["id"] == track_id)
        best = self._live[(result.source, track_id)] = _Best(
            os.path.join(self.folder, snapshot_name(result.source, start, track_id)))
        return best

    def _submit(self, best, now):
        if not best.pending or (best.submitted_at is not None and now - best.submitted_at < self._settings.min_interval_s):
            return
        if self.writer.submit(SnapshotJob("snapshot", best, best.frame, True, False)):
            best.pending, best.submitted_at = False, now

    def _final(self, best):
        """At `end`: the best frame drawn (if not written yet) and its clean copy."""
        if best.frame is not None and (best.pending or self._settings.clean_copy):
            self.writer.submit(SnapshotJob("snapshot", best, best.frame, best.pending, self._settings.clean_copy))

    def object_events(self, events):
        """Fills each event's `snapshot` with the object's path once its JPEG is on disk; at `end`
        queues the final write."""
        for event in events:
            key = (event["source"], event["id"])
            best = self._live.pop(key, None) if event["event"] == "end" else self._live.get(key)
            if best is None:
                continue
            if event["event"] == "end":
                self._final(best)
            event["snapshot"] = best.path if best.on_disk else None

    def _write(self, job):
        """Writer thread: the drawn JPEG and/or the clean copy, each atomically."""
        quality = self._settings.quality
        os.makedirs(os.path.dirname(job.best.path), exist_ok=True)
        frame = job.frame
        if job.drawn:
            files.write_bytes_atomic(job.best.path, files.annotated_jpeg(
                frame.image, frame.box, frame.class_id, frame.score, frame.label, quality))
            job.best.on_disk = True
            self.written += 1
        if job.clean:
            files.write_bytes_atomic(clean_name(job.best.path), files.encode_jpeg(frame.image, quality))

    def close(self):
        """Writes what is queued (the final snapshots of the objects ended at shutdown), then stops."""
        self.writer.close()

