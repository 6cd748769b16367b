"""Where results go besides the window: JSON-lines events and the stats file.

Event lines (one JSON object per line, flushed as written):
  {"type": "detections", "frame": N, "source": S, "time": T, "model": "edgetpu|int8|float",
   "detections": [{"label": L, "class_id": C, "score": P, "box": [x0, y0, x1, y1]}]}
  {"type": "status", "event": "started|source_lost|source_reconnected|stopped|...", "time": T, ...}
  {"type": "object", "event": "new|update|end", "id": N, ...}   (see app.tracking.objects)
`box` is in source-frame pixels; for image folders `source` is the file name. Every string
goes through app.redact so camera passwords never reach the file.
"""

import json
import os
import sys
import threading
import time

from app.errors import UserError
from app.outputs.files import atomic_path
from app.redact import redact_value


def detection_event(result):
    """The "detections" event dict of a pipeline FrameResult."""
    d = result.detections
    items = [{"label": label, "class_id": int(c), "score": round(float(s), 4),
              "box": [round(float(v), 1) for v in box]}
             for label, c, s, box in zip(result.labels, d.class_ids, d.scores, result.boxes)]
    return {"type": "detections", "frame": int(result.frame), "source": result.name,
            "time": round(result.time, 3), "model": result.model, "detections": items}


class EventWriter(object):
    """JSON lines to a file or to stdout ("-"). Thread-safe: status events come from any thread.

    Args:
      target: file path, or "-" for stdout.
    """

    def __init__(self, target):
        if target == "-":
            self._file, self._owned = sys.stdout, False
        else:
            try:
                self._file = open(target, "a")
            except (IOError, OSError) as e:
                raise UserError("--events {}: cannot open for writing ({}). Pick a writable path or '-'"
                                .format(target, e.strerror or e))
            self._owned = True
        self._lock = threading.Lock()

    def _emit(self, obj):
        line = json.dumps(redact_value(obj), separators=(",", ":"))
        with self._lock:
            if self._file is None:
                return
            self._file.write(line + "\n")
            self._file.flush()

    def write(self, result):
        self._emit(detection_event(result))

    def status(self, message):
        self._emit(dict(message))

    def object_events(self, events):
        """The pipeline's object events (app.tracking.objects): one {"type": "object", ...} line each."""
        for event in events:
            self._emit(event)

    def close(self):
        with self._lock:
            if self._owned and self._file is not None:
                self._file.close()
            self._file = None


def write_json_atomic(path, obj):
    """Writes `obj` as JSON to `path` via a temp file in the same folder and os.replace."""
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=1)


class StatsWriter(object):
    """Rewrites the stats file (atomically) at most every `interval_s` seconds, and at close.

    Args:
      path: the --stats file.
      stats: app.pipeline.stats.Stats.
      interval_s: seconds between rewrites.
    """

    def __init__(self, path, stats, interval_s=1.0):
        folder = os.path.dirname(os.path.abspath(path))
        if not os.path.isdir(folder) or not os.access(folder, os.W_OK):
            raise UserError("--stats {}: folder {} does not exist or is not writable".format(path, folder))
        self._path, self._stats, self._interval = path, stats, float(interval_s)
        self._last = 0.0

    def write(self, result):
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            write_json_atomic(self._path, redact_value(self._stats.snapshot()))

    def close(self):
        write_json_atomic(self._path, redact_value(self._stats.snapshot()))
