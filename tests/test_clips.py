"""app.outputs.recordings.clips and ring: the pre-capture ring's bounds, a clip from pre_capture_s before `new` to
post_capture_s after `end` written as a real MP4 and read back, its status event, a full disk.

Real OpenCV encoding and decoding, the real object stage and real files."""

import glob
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from app.config import ClipsConfig
from app.errors import UserError
from app.outputs.recordings import clips
from app.outputs.recordings.ring import EncodedRing
from outputs_support import result, square_box, stage


def test_ring_keeps_the_last_seconds_within_its_bytes():
    ring = EncodedRing(seconds=1.0, max_bytes=1000)
    for i in range(30):
        ring.push(i * 0.25, b"x" * 50)
    assert len(ring) == 5 and ring.bytes == 250  # t 7.25 back to 6.25 inclusive
    for i in range(30, 40):
        ring.push(i * 0.25, b"y" * 300)
    frames = ring.take()
    assert [len(d) for _, d in frames] == [300] * 3 and frames[0][0] == 9.25  # 1000 bytes hold 3
    assert len(ring) == 0 and ring.bytes == 0


def _clip_run(recorder, present, frames=80, dt=0.1):
    """The square is seen in frames `present` (a range); returns the object events."""
    objects, events = stage(), []
    for i in range(frames):
        frame = result(objects, i, 0.9 if i in present else None, 100.0 + i * dt)
        recorder.write(frame)
        recorder.object_events(frame.objects.events)
        events += frame.objects.events
        assert recorder.writer.flush()  # frames come at camera pace, not faster than the writer
    return events


def _square_lefts(path):
    import cv2
    reader = cv2.VideoCapture(path)
    lefts = []
    while True:
        ok, image = reader.read()
        if not ok:
            return lefts
        lefts.append(int(np.argmax(image[110, :, 1] > 170)))


def test_clip_spans_pre_capture_to_post_capture(tmp_path):
    emitted = []
    recorder = clips.ClipRecorder(ClipsConfig(enabled=True, dir=str(tmp_path), pre_capture_s=1.0,
                                              post_capture_s=0.5, fps=10.0),
                                  "config.yaml", emit=lambda event, **f: emitted.append(dict(f, event=event)))
    # Seen in frames 30..49: new at frame 31 (t 103.1, min_hits 2), end at frame 52 (t 105.2, max_age 2).
    events = _clip_run(recorder, range(30, 50))
    recorder.close()
    assert [(e["event"], e["time"]) for e in events] == [("new", 103.1), ("end", 105.2)]
    assert len(emitted) == 1, emitted
    clip = emitted[0]
    # From 1 s before `new` (the ring's frames, the last at t 103.0) to 0.5 s after `end` (t 105.7),
    # one frame per 0.1 s (a frame at exactly 1 s before may fall either side in floating point).
    assert abs(clip["start_time"] - 102.05) <= 0.051 and clip["end_time"] == 105.7
    first = int(round((clip["start_time"] - 100.0) / 0.1))
    assert clip["frames"] == 58 - first and clip["objects"] == [1] and clip["source"] == "cam"
    name = "cam-{:.3f}.mp4".format(clip["start_time"])
    assert clip["clip"] == str(tmp_path / "cam" / name)
    lefts = _square_lefts(clip["clip"])
    expected = [int(square_box(i)[0]) for i in range(first, 58)]
    assert len(lefts) == len(expected)
    assert max(abs(a - b) for a, b in zip(lefts, expected)) <= 2  # frame by frame, the square where it was
    assert sorted(os.listdir(str(tmp_path / "cam"))) == [name]  # no temp file left


def test_long_stretch_is_cut_at_max_clip_s(tmp_path):
    emitted = []
    recorder = clips.ClipRecorder(ClipsConfig(enabled=True, dir=str(tmp_path), pre_capture_s=0.0,
                                              post_capture_s=0.0, max_clip_s=2.0, fps=10.0),
                                  "config.yaml", emit=lambda event, **f: emitted.append(f))
    _clip_run(recorder, range(0, 60), frames=60)
    recorder.close()
    assert [c["frames"] for c in emitted] == [20, 20, 19]  # new at frame 1; 2 s cuts; the rest at close
    assert all(c["objects"] == [1] for c in emitted)


def test_bad_settings_and_unwritable_folder_name_the_key(tmp_path):
    with pytest.raises(UserError, match=r"config.yaml: clips.fps: expected in \(0, 120\], got 0.0"):
        clips.ClipRecorder(ClipsConfig(dir=str(tmp_path), fps=0.0), "config.yaml")
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match=r"config.yaml: clips.dir: .* is not a writable folder"):
        clips.ClipRecorder(ClipsConfig(dir=str(blocker / "clips")), "config.yaml")


FULL_DISK = textwrap.dedent("""
    import logging, resource, signal, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    from app.config import ClipsConfig
    from app.outputs.recordings import clips
    from outputs_support import result, stage
    emitted = []
    recorder = clips.ClipRecorder(ClipsConfig(dir={folder!r}, pre_capture_s=1.0, post_capture_s=0.5),
                                  "config.yaml", emit=lambda event, **f: emitted.append(f))
    # Files may grow to 4 KB: the clip's MP4 (7.5 KB when whole) outgrows it, so its writes fail with EFBIG.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))
    objects = stage()
    for i in range(80):
        frame = result(objects, i, 0.9 if 30 <= i < 50 else None, 100.0 + i * 0.1)
        recorder.write(frame)
        recorder.object_events(frame.objects.events)
        recorder.writer.flush()
    recorder.close()
    print("EMITTED", len(emitted), "FAULTS", recorder.writer.faults.counts)
""")


def test_full_disk_clip_is_logged_and_never_visible(tmp_path):
    """RLIMIT_FSIZE with SIGXFSZ ignored (writes past 4 KB fail with EFBIG, as on a full disk), in a
    child process: OpenCV does not report the failed writes; reading the file back catches it."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    folder = str(tmp_path / "clips")
    script = FULL_DISK.format(root=root, tests=os.path.join(root, "tests"), folder=folder)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert "EMITTED 0 FAULTS {'clip': 1}" in out.stdout, out.stdout + out.stderr
    assert "frames readable (disk full?)" in out.stderr
    assert glob.glob(os.path.join(folder, "**", "*"), recursive=True) == [os.path.join(folder, "cam")]
