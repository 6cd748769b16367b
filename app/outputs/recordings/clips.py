"""Clips: MP4s of each source's objects, from `pre_capture_s` before a `new` to `post_capture_s` after an `end`.

A pipeline sink (`clips:` in config.yaml). The output thread only samples frames at `fps` (a
reference to the raw frame, which capture never reuses), marks whether the source is recording
(an object is live, or the last one ended less than `post_capture_s` ago) and queues them; it never
encodes. A BackgroundWriter thread does the rest, per source:
- not recording: the frame is JPEG-encoded into an EncodedRing (the pre-capture seconds);
- recording starts: a cv2.VideoWriter (mp4v) opens on a temp file beside the clip, the ring's
  frames are decoded into it, then every sampled frame goes in as it comes;
- recording stops (or the clip reaches `max_clip_s`, or the frame size changes): the file is
  closed, read back (its frame count must be what was written: a full disk leaves a short or
  unreadable file), moved to `<dir>/<source>/<source>-<start_time>.mp4` and announced with a status
  event {"type": "status", "event": "clip", "source": S, "clip": PATH, "start_time": T0,
  "end_time": T1, "frames": N, "objects": [ids]} (`attach(pipeline)` wires it to the pipeline).
Objects whose clips overlap share one clip: one re-encode per frame, however many objects.
A clip that fails (full disk, unwritable folder) is logged, its temp file removed, and skipped.
"""

import logging
import os
from collections import namedtuple

import numpy as np

from app.outputs import files
from app.outputs.recordings.retention import Retention
from app.outputs.recordings.ring import EncodedRing
from app.outputs.recordings.writer import BackgroundWriter

log = logging.getLogger(__name__)

# A sampled frame. image: the raw BGR frame uint8 [H, W, 3]; record: the source is recording;
# objects: ids of the source's live objects; time: wall-clock seconds.
ClipFrame = namedtuple("ClipFrame", "kind source time image record objects")
QUEUE_FRAMES = 16  # at most 16 raw frames wait for the writer (15 MB at 640x480)


def clip_name(source, start_time):
    """The path of a clip under the clips folder: "<source>/<source>-<start>.mp4"."""
    safe = files.safe_name(source)
    return os.path.join(safe, "{}-{:.3f}.mp4".format(safe, float(start_time)))


def check_settings(settings, where):
    """The clips folder (made if missing) after checking the keys; UserError naming the key otherwise."""
    return files.checked_folder(settings, where, "clips", (
        ("pre_capture_s", settings.pre_capture_s >= 0, ">= 0"),
        ("post_capture_s", settings.post_capture_s >= 0, ">= 0"),
        ("max_clip_s", settings.max_clip_s > 0, "> 0"),
        ("fps", 0 < settings.fps <= 120, "in (0, 120]"),
        ("quality", 1 <= settings.quality <= 100, "in 1..100"),
        ("buffer_mb", settings.buffer_mb > 0, "> 0"),
        ("retain_days", settings.retain_days >= 0, ">= 0"),
        ("max_total_mb", settings.max_total_mb >= 0, ">= 0")))


class _Window(object):
    """Output thread, one source: its live objects, when the last ended, the next sample time."""

    def __init__(self):
        self.live, self.last_end, self.next_sample = set(), None, 0.0

    def recording(self, now, post_s):
        return bool(self.live) or (self.last_end is not None and now - self.last_end <= post_s)


class _Recording(object):
    """Writer thread, one open clip."""

    def __init__(self, path, size, start, fps):
        import cv2
        self.path, self.size, self.start, self.end = path, size, start, start
        self.tmp = files.temp_beside(path, ".tmp.mp4")
        self.video = cv2.VideoWriter(self.tmp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
        if not self.video.isOpened():
            files.discard(self.tmp)
            raise OSError("cannot open an mp4v VideoWriter on {}".format(self.tmp))
        self.frames, self.objects = 0, set()

    def add(self, image, time_s, objects=()):
        self.video.write(image)
        self.frames += 1
        self.end = time_s
        self.objects.update(objects)

    def finish(self):
        """Closes the file, checks it reads back whole and commits it; the clip's fields.

        Raises:
          OSError: the file is short or unreadable (its temp file is removed).
        """
        import cv2
        self.video.release()
        reader = cv2.VideoCapture(self.tmp)
        readable = int(reader.get(cv2.CAP_PROP_FRAME_COUNT)) if reader.isOpened() else 0
        reader.release()
        if readable != self.frames:
            files.discard(self.tmp)
            raise OSError("clip {}: {} of {} frames readable (disk full?)".format(self.path, readable, self.frames))
        files.commit(self.tmp, self.path)
        return {"clip": self.path, "start_time": round(self.start, 3), "end_time": round(self.end, 3),
                "frames": self.frames, "objects": sorted(self.objects)}


class ClipRecorder(object):
    """The clip sink.

    Args:
      settings: app.config.ClipsConfig.
      where: the config file name for messages.
      emit: callable(event, **fields) for the clip status event (Pipeline.status); attach() sets it.

    Raises:
      UserError: an out-of-range key, or clips.dir cannot be made or written.
    """

    check = staticmethod(check_settings)  # LiveApp checks the section at start, before building anything

    def __init__(self, settings, where, emit=None):
        self.folder = check_settings(settings, where)
        self._settings, self._emit, self._period = settings, emit, 1.0 / settings.fps
        self.retention = Retention(self.folder, settings.retain_days, settings.max_total_mb)
        self._windows = {}              # output thread: source -> _Window
        self._rings, self._open = {}, {}  # writer thread: source -> EncodedRing / _Recording
        self.clips = 0
        self.writer = BackgroundWriter("edgedet-clips", self._run, idle=self.retention.maybe_run, size=QUEUE_FRAMES)

    def attach(self, pipeline):
        """Sends the clip events through `pipeline.status` (to every sink that takes status events)."""
        self._emit = pipeline.status

    def write(self, result):
        window = self._windows.setdefault(result.source, _Window())
        if result.time < window.next_sample:
            return
        window.next_sample = max(window.next_sample + self._period, result.time)
        recording = window.recording(result.time, self._settings.post_capture_s)
        self.writer.submit(ClipFrame("clip", result.source, result.time, result.raw, recording,
                                     tuple(window.live)))

    def object_events(self, events):
        for event in events:
            window = self._windows.setdefault(event["source"], _Window())
            if event["event"] == "new":
                window.live.add(event["id"])
            elif event["event"] == "end":
                window.live.discard(event["id"])
                window.last_end = event["time"]

    def _run(self, frame):
        """Writer thread: one sampled frame into the ring or the open clip."""
        size = (frame.image.shape[1], frame.image.shape[0])
        recording = self._open.get(frame.source)
        if recording is not None and (not frame.record or recording.size != size
                                      or frame.time - recording.start >= self._settings.max_clip_s):
            self._finish(frame.source)
            recording = None
        if not frame.record:
            self._ring(frame.source).push(frame.time, files.encode_jpeg(frame.image, self._settings.quality))
            return
        if recording is None:
            recording = self._start(frame, size)
        recording.add(frame.image, frame.time, frame.objects)

    def _ring(self, source):
        if source not in self._rings:
            self._rings[source] = EncodedRing(self._settings.pre_capture_s, int(1e6 * self._settings.buffer_mb))
        return self._rings[source]

    def _start(self, frame, size):
        """Opens a clip and writes the ring's frames (of this frame size) into it first."""
        import cv2
        earlier = self._ring(frame.source).take()
        start = earlier[0][0] if earlier else frame.time
        path = os.path.join(self.folder, clip_name(frame.source, start))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        recording = self._open[frame.source] = _Recording(path, size, start, self._settings.fps)
        for t, data in earlier:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is not None and (image.shape[1], image.shape[0]) == size:
                recording.add(image, t)
        return recording

    def _finish(self, source):
        fields = self._open.pop(source).finish()
        self.clips += 1
        log.info("clip saved: %s (%d frames)", fields["clip"], fields["frames"])
        if self._emit is not None:
            self._emit("clip", source=source, **fields)

    def close(self):
        """Writes the queued frames, then finishes the open clips (the app is stopping)."""
        self.writer.close()
        for source in list(self._open):
            try:
                self._finish(source)
            except OSError as e:
                self.writer.faults.fault("clip", "edgedet-clips: clip failed, skipped: {}".format(e))

