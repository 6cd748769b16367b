"""Files the outputs write: atomic writes, folder checks, file-name-safe source names, JPEG bytes.

Every file appears under its final name only when complete: it is written to a temp file in
the same folder (a name starting with "." and ending in `.tmp<ext>`, which retention and the
web view skip) and moved into place with os.replace, which is atomic within one file system.
"""

import contextlib
import os
import re
import tempfile

from app.errors import UserError
from app.outputs import overlay
from app.redact import redact

TEMP_PREFIX = ".edgedet-"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def temp_beside(path, suffix=".tmp"):
    """A new empty temp file in `path`'s folder, to be moved to `path` by commit() or removed by discard().

    `suffix` ends its name (an MP4 writer picks its container by the extension: clips pass ".tmp.mp4").
    """
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=suffix, dir=os.path.dirname(os.path.abspath(path)))
    os.close(fd)
    return tmp


def commit(tmp, path):
    """Moves a finished temp file to its final name (atomic within one file system)."""
    os.replace(tmp, path)


def discard(tmp):
    """Removes a temp file that will not be committed (nothing if it is already gone)."""
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass


@contextlib.contextmanager
def atomic_path(path, suffix=".tmp"):
    """Yields a temp path beside `path`; moves it to `path` when the block ends without error.

    The temp file is removed when the block raises.
    """
    tmp = temp_beside(path, suffix)
    try:
        yield tmp
        commit(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def write_bytes_atomic(path, data):
    """Writes bytes `data` to `path` via a temp file in the same folder and os.replace.

    Raises:
      OSError: the folder is missing or unwritable, or the disk is full (nothing is left behind).
    """
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def annotated_jpeg(image, box, class_id, score, label, quality):
    """JPEG bytes of a copy of `image` with one detection (`box`: pixels x0, y0, x1, y1) drawn: the
    snapshot files and the MQTT snapshots are the same picture."""
    drawn = image.copy()
    overlay.draw_detections(drawn, [box], [class_id], [score], [label])
    return encode_jpeg(drawn, quality)


def encode_jpeg(image, quality):
    """JPEG bytes of a BGR uint8 [H, W, 3] frame at `quality` 1..100.

    Raises:
      OSError: OpenCV could not encode it (treated like a failed write: logged and skipped).
    """
    import cv2
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise OSError("JPEG encoding of a {}x{} frame failed".format(image.shape[1], image.shape[0]))
    return data.tobytes()


def safe_name(text):
    """A file-name part for a source name: credentials masked, runs of other than [A-Za-z0-9._-]
    replaced by "_" ("rtsp://u:pw@cam/1" -> "rtsp_cam_1"; "synthetic:640x480@30" -> "synthetic_640x480_30")."""
    return _UNSAFE.sub("_", redact(text).replace("***", "")).strip("._") or "source"


def checked_folder(settings, where, section, checks):
    """A snapshots/clips section's folder, made and proven writable, after its range checks.

    Args:
      settings: the section (its `dir` is the folder).
      where: the config file name for messages.
      section: its name, e.g. "clips".
      checks: (key, ok, expected) of each range check, e.g. ("fps", fps > 0, "> 0").

    Raises:
      UserError: naming the key of the first failed check, or `<section>.dir`.
    """
    for key, ok, expected in checks:
        if not ok:
            raise UserError("{}: {}.{}: expected {}, got {}".format(where, section, key, expected, getattr(settings, key)))
    return writable_folder(settings.dir, where, section + ".dir")


def writable_folder(path, where, key):
    """Creates folder `path` if needed and proves it writable by writing a temp file in it.

    Args:
      path: the folder.
      where: the config file name for messages.
      key: its dotted config key, e.g. "snapshots.dir".

    Returns:
      The absolute path.

    Raises:
      UserError: naming the key, when the folder cannot be made or written.
    """
    path = os.path.abspath(path)
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise UserError("{}: {}: {} is not a writable folder ({}). Set {} to a folder edgedet may write, "
                        "or turn the section off".format(where, key, path, e.strerror or e, key))
    return path
