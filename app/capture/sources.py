"""Frame sources for `--source`: cameras, streams, video files, image folders, the synthetic camera.

Every source gives BGR uint8 frames through `read()`, which returns `(image, name)`,
None at the end of a file, or raises `SourceLost` when a live source stops delivering.
Paced sources also have `interrupt()`: the pipeline's stop() calls it so that a read
waiting for its next frame time returns at once. `live` says how the pipeline hands frames on: live sources go through a latest-frame
slot (stale frames dropped), files and folders through a blocking hand-off (every frame,
in order) unless `realtime` was asked for.

Spec syntax:
  0, 1, /dev/video0          camera (V4L2 via cv2.VideoCapture)
  rtsp://..., http(s)://...  network stream
  clip.mp4                   video file (`loop` restarts it)
  photos/, "photos/*.jpg"    image folder or glob, sorted by name; `name` is the file name
  synthetic[:WxH[@FPS]]      the moving-shapes camera (default 640x480@30; @0 = unpaced, on demand)

Names that reach logs and events are passed through `app.redact.redact`, so
`rtsp://user:pass@cam` is shown as `rtsp://***:***@cam`.
"""

import glob
import logging
import os
import re
import threading
import time

from app.errors import UserError
from app.redact import redact

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
_SYNTHETIC_RE = re.compile(r"^synthetic(?::(\d+)x(\d+))?(?:@(\d+(?:\.\d+)?))?$")
_URL_RE = re.compile(r"^(rtsp|rtsps|rtmp|http|https)://", re.IGNORECASE)
_CAMERA_RE = re.compile(r"^(\d+|/dev/video\d+)$")


class SourceLost(Exception):
    """A live source stopped delivering frames; the pipeline reconnects it."""


class _Paced(object):
    """Sleeps so that successive calls happen at most `fps` times a second (0 = no pacing).

    `first_at_once=False` makes the first call wait one period too, like a camera whose
    first frame arrives one frame interval after it was opened.
    """

    def __init__(self, fps, first_at_once=True):
        self._period = 1.0 / fps if fps and fps > 0 else 0.0
        self._next = None if first_at_once else time.monotonic() + self._period
        self._wake = threading.Event()

    def interrupt(self):
        """Ends the current and every later wait at once (shutdown)."""
        self._wake.set()

    def wait(self):
        if not self._period:
            return
        now = time.monotonic()
        if self._next is not None and self._next > now:
            self._wake.wait(self._next - now)
            now = self._next
        self._next = now + self._period


class SyntheticSource(object):
    """`app.capture.synthetic.MovingScene` as a camera.

    Paced (fps > 0) it is a live camera: frames come on time and stale ones are dropped.
    Unpaced (@0) it renders on demand, one frame ahead of inference, because rendering
    frames nobody will see would only take CPU from the interpreter.
    """

    def __init__(self, width=640, height=480, fps=30.0, seed=0):
        from app.capture.synthetic import MovingScene
        self.live = fps > 0
        self.name = "synthetic:{}x{}@{:g}".format(width, height, fps)
        self.frame_size = (int(width), int(height))  # known before the first frame (zones are checked on it)
        self._scene = MovingScene(width, height, seed=seed)
        self._pace = _Paced(fps, first_at_once=False)

    def read(self):
        self._pace.wait()
        return self._scene.next_image(), self.name

    def interrupt(self):
        """Wakes a read() waiting for its next frame time (called by the pipeline's stop())."""
        self._pace.interrupt()

    def reopen(self):
        return True

    def close(self):
        pass


class ImageFolderSource(object):
    """Every image of a folder or glob, sorted by path; each frame is named by its file name."""

    def __init__(self, spec, loop=False, realtime=False):
        if os.path.isdir(spec):
            paths = [os.path.join(spec, n) for n in os.listdir(spec)]
        else:
            paths = glob.glob(spec)
        self.paths = sorted(p for p in paths if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p))
        if not self.paths:
            raise UserError("--source {}: no images ({}) found. Check the folder or quote the glob"
                            .format(spec, " ".join(IMAGE_EXTENSIONS)))
        self.name = spec
        self.live = realtime
        self._loop = loop
        self._next = 0

    def read(self):
        import cv2
        while True:
            if self._next >= len(self.paths):
                if not self._loop:
                    return None
                self._next = 0
            path = self.paths[self._next]
            self._next += 1
            image = cv2.imread(path, cv2.IMREAD_COLOR)
            if image is not None:
                return image, os.path.basename(path)
            log.warning("%s: not a readable image; skipped", path)

    def reopen(self):
        return True

    def close(self):
        pass


class CaptureSource(object):
    """cv2.VideoCapture: a camera, a stream or a video file.

    `timeout_s` (> 0) is given to OpenCV's FFmpeg backend as its open and read timeouts
    (OpenCV >= 4.2) for network streams, so a stream that stalls without closing makes
    read() fail after that long instead of blocking forever; the pipeline then reconnects.
    """

    def __init__(self, target, name, live, loop=False, realtime=False, timeout_s=0.0):
        self.name = name
        self.live = live or realtime
        self._timeout_ms = int(timeout_s * 1000) if isinstance(target, str) and _URL_RE.match(target) else 0
        self._target = target
        self._file = not live
        self._loop = loop
        self._cap = None
        if not self.reopen():
            raise UserError("--source {}: cannot be opened. Check the camera index / device, the URL and "
                            "its credentials, or the file (OpenCV must support its codec)".format(name))
        fps = self._cap.get(5) if self._file and realtime else 0.0  # 5 = CAP_PROP_FPS
        self._pace = _Paced(fps)

    def reopen(self):
        """(Re)opens the capture; True if it delivers."""
        import cv2
        self.close()
        if self._timeout_ms > 0 and hasattr(cv2, "CAP_PROP_READ_TIMEOUT_MSEC"):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, self._timeout_ms, cv2.CAP_PROP_READ_TIMEOUT_MSEC,
                      self._timeout_ms]
            self._cap = cv2.VideoCapture(self._target, cv2.CAP_ANY, params)
        else:
            self._cap = cv2.VideoCapture(self._target)
        return bool(self._cap.isOpened())

    def read(self):
        self._pace.wait()
        ok, image = self._cap.read()
        if ok and image is not None:
            return image, self.name
        if not self._file:
            raise SourceLost("{}: no frame".format(self.name))
        if self._loop and self.reopen():
            ok, image = self._cap.read()
            if ok and image is not None:
                return image, self.name
        return None

    def interrupt(self):
        """Wakes a read() waiting for its pacing (a blocked OpenCV read ends by its own timeout)."""
        self._pace.interrupt()

    def close(self):
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def parse_synthetic(spec):
    """synthetic[:WxH[@FPS]] -> (width, height, fps), or None if `spec` is not synthetic."""
    match = _SYNTHETIC_RE.match(spec)
    if match is None:
        if spec.startswith("synthetic"):
            raise UserError("--source {}: expected synthetic[:WxH[@FPS]], e.g. synthetic:640x480@30".format(spec))
        return None
    width, height, fps = match.groups()
    width, height = int(width or 640), int(height or 480)
    if width < 32 or height < 32:
        raise UserError("--source {}: frames must be at least 32x32".format(spec))
    return width, height, float(fps) if fps is not None else 30.0


def open_source(spec, loop=False, realtime=False, seed=0, timeout_s=0.0):
    """Opens one `--source` value.

    Args:
      spec: the source string (see the module docstring).
      loop: restart video files and folders at their end.
      realtime: treat files and folders like a live source (latest-frame slot, drops).
      seed: seed of the synthetic camera.
      timeout_s: open/read timeout of network streams in seconds (0 = OpenCV's default).

    Returns:
      A source with `name`, `live`, `read()`, `reopen()`, `close()`.

    Raises:
      UserError: the source does not exist or cannot be opened.
    """
    if not isinstance(spec, str) or not spec:
        raise UserError("--source: expected a camera, URL, file, folder, glob or synthetic, got {!r}".format(spec))
    synthetic = parse_synthetic(spec)
    if synthetic is not None:
        width, height, fps = synthetic
        return SyntheticSource(width, height, fps, seed)
    if _CAMERA_RE.match(spec):
        device = "/dev/video" + spec if spec.isdigit() else spec
        if os.name == "posix" and os.path.isdir("/dev") and not os.path.exists(device):
            raise UserError("--source {}: camera {} does not exist. List cameras with `v4l2-ctl --list-devices` "
                            "or `ls /dev/video*`".format(spec, device))
        target = int(spec) if spec.isdigit() else spec
        return CaptureSource(target, spec, live=True)
    if _URL_RE.match(spec):
        return CaptureSource(spec, redact(spec), live=True, timeout_s=timeout_s)
    if os.path.isdir(spec) or any(c in spec for c in "*?[") or spec.lower().endswith(IMAGE_EXTENSIONS):
        return ImageFolderSource(spec, loop, realtime)
    if os.path.isfile(spec):
        return CaptureSource(spec, spec, live=False, loop=loop, realtime=realtime)
    raise UserError("--source {}: no such camera, file or folder. Use a camera index, /dev/videoN, an "
                    "rtsp:// or http:// URL, a video file, a folder, a glob or synthetic[:WxH[@FPS]]"
                    .format(redact(spec)))
