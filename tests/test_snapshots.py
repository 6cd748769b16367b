"""app.outputs.recordings.snapshots: the best frame of each object on disk, drawn and clean, rewritten when the
score improves (rate-limited), final at `end`; the events' `snapshot` path; bad folders; a full disk.

Real files, real JPEG encoding, the real object stage (frame times 0.25 s apart)."""

import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from app.config import SnapshotsConfig
from app.errors import UserError
from app.outputs import overlay
from app.outputs.recordings import snapshots
from outputs_support import result, square_box, square_frame, stage


def _run(sink, scores, dt=0.25):
    """Feeds the frames (dt seconds apart) through the sink as the pipeline does; returns every object event."""
    objects, events = stage(), []
    for i, score in enumerate(scores):
        frame = result(objects, i, score, i * dt)
        sink.write(frame)
        sink.object_events(frame.objects.events)
        events += frame.objects.events
        assert sink.writer.flush()
    return events


def _square_left(image):
    """x of the square's left edge in a frame (the first bright column on row 110)."""
    return int(np.argmax(image[110, :, 1] > 170))


def _read(path):
    import cv2
    image = cv2.imread(path)
    assert image is not None, path
    return image


def test_best_frame_drawn_and_clean_and_event_paths(tmp_path):
    sink = snapshots.Snapshots(SnapshotsConfig(enabled=True, dir=str(tmp_path / "snaps"), min_interval_s=1.0),
                               "config.yaml")
    # Frame 1 (confirmed) is written at once, frame 5's 0.95 (better than 0.9 at frame 3) waits out
    # the 1 s interval and is written at `end`.
    scores = [0.6, 0.7, 0.8, 0.9, 0.5, 0.95, None, None, None, None]
    events = _run(sink, scores)
    sink.close()
    kinds = [e["event"] for e in events]
    assert kinds[0] == "new" and kinds[-1] == "end"
    name = snapshots.snapshot_name("cam", 0.0, 1)
    path = str(tmp_path / "snaps" / name)
    assert name == os.path.join("cam", "cam-0.000-1.jpg")
    # `new` (frame 1) is emitted before its JPEG exists; the end event names the finished file.
    assert events[0]["snapshot"] is None and events[-1]["snapshot"] == path
    assert all(e["snapshot"] in (None, path) for e in events)
    # The final file shows frame 5, the best (0.95): the clean copy is that frame exactly.
    clean = _read(snapshots.clean_name(path)).astype(int)
    assert _square_left(clean) == int(square_box(5)[0]) and np.abs(clean - square_frame(5)).mean() < 2.0
    drawn = _read(path).astype(int)
    x0, y0, x1, y1 = [int(v) for v in square_box(5)]
    colour = np.array(overlay.class_colour(1))
    left_edge = drawn[y0 + 10:y1 - 10, x0]
    assert np.abs(left_edge - colour).max(axis=1).mean() < 40  # the box in the square's class colour
    assert np.abs(clean[y0 + 10:y1 - 10, x0] - colour).max(axis=1).mean() > 100
    assert sorted(os.listdir(str(tmp_path / "snaps" / "cam"))) == ["cam-0.000-1-clean.jpg", "cam-0.000-1.jpg"]


def test_rewrites_are_rate_limited(tmp_path):
    sink = snapshots.Snapshots(SnapshotsConfig(enabled=True, dir=str(tmp_path), min_interval_s=1.0,
                                               clean_copy=False), "config.yaml")
    # 12 frames, 0.25 s apart, every score better than the last: written at its first frame
    # (t 0.25), then once a second (t 1.25, 2.25), then the last (t 2.75) at `end`.
    _run(sink, [0.5 + 0.04 * i for i in range(12)] + [None] * 3)
    sink.close()
    assert sink.written == 4


def test_unwritable_folder_at_start_is_an_error_naming_the_key(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"config.yaml: snapshots.dir: .*file/snaps is not a writable folder"):
        snapshots.Snapshots(SnapshotsConfig(enabled=True, dir=str(blocker / "snaps")), "config.yaml")
    with pytest.raises(UserError, match=r"config.yaml: snapshots.quality: expected in 1..100, got 0"):
        snapshots.Snapshots(SnapshotsConfig(enabled=True, dir=str(tmp_path), quality=0), "config.yaml")


FULL_DISK = textwrap.dedent("""
    import logging, resource, signal, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from app.config import SnapshotsConfig
    from app.outputs.recordings import snapshots
    from outputs_support import result, stage
    sink = snapshots.Snapshots(SnapshotsConfig(enabled=True, dir={folder!r}, min_interval_s=0.0), "config.yaml")
    # Files may grow to 1 KB: every JPEG of a 320x240 frame is larger, so each write fails with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))
    objects = stage()
    events = []
    for i, score in enumerate([0.5 + 0.01 * i for i in range(30)] + [None] * 3):
        frame = result(objects, i, score, i * 0.25)
        sink.write(frame)
        sink.object_events(frame.objects.events)
        events += frame.objects.events
    sink.close()
    print("EVENTS", [e["snapshot"] for e in events])
    print("FAULTS", sink.writer.faults.counts)
""")


def test_full_disk_is_logged_once_and_skipped(tmp_path):
    """RLIMIT_FSIZE with SIGXFSZ ignored: writes beyond 1 KB fail with EFBIG as on a full disk
    (no tmpfs or loop device needed), in a child process so the limit stays there."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = str(tmp_path / "snaps")
    script = FULL_DISK.format(root=root, tests=os.path.join(root, "tests"), folder=folder)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    warnings = [line for line in out.stderr.splitlines() if "snapshot failed" in line]
    assert len(warnings) == 1 and "File too large" in warnings[0], out.stderr
    assert "EVENTS [None, None" in out.stdout and "cam-" not in out.stdout  # no event names a missing file
    faults = eval(out.stdout.split("FAULTS", 1)[1])
    assert faults["snapshot"] >= 2
    assert glob.glob(os.path.join(folder, "**", "*"), recursive=True) == [os.path.join(folder, "cam")]
