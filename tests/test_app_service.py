"""app.service sinks and Pipeline.replace_workers, in process, on the real tiny bundle."""

import socket
import time

import numpy as np
import pytest

from app.outputs import overlay
from app import service
from app.pipeline.threads import RESULT_QUEUE_SIZE, FrameResult, Pipeline
from app.model.postprocess import Detections
from app.capture.sources import open_source
from app.pipeline.stats import Stats
from app_support import cpu_worker
from tiny_bundle import tiny_bundle  # noqa: F401

LABELS = {0: "circle", 1: "square", 2: "triangle"}


class Clock(object):
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _result(frame, value=60):
    raw = np.full((48, 64, 3), value, np.uint8)
    det = Detections(np.array([[0.25, 0.25, 0.75, 0.75]], np.float32), np.array([0.9], np.float32),
                     np.array([1], np.int32))
    return FrameResult("cam", frame, "cam", time.time(), raw, raw, det, np.array([[16, 12, 48, 36]], np.float32),
                       ["square"], "int8", {})


def test_frame_feed_does_no_picture_work_until_asked_and_caps_the_encode_rate():
    import cv2
    clock, drawn = Clock(), []

    def draw(image, result, hud):
        drawn.append(result.frame)
        overlay.draw_result(image, result, hud)
    feed = service.FrameFeed(draw, lambda: "hud", max_fps=5.0, clock=clock)
    assert feed.get_jpeg() is None
    for i in range(100):
        feed.write(_result(i))
    assert feed.encodes == 0 and drawn == []  # 100 frames, nobody watching: no work
    first = feed.get_jpeg()
    assert feed.encodes == 1 and drawn == [99]
    feed.write(_result(100))
    clock.now += 0.1
    assert feed.get_jpeg() is first  # 0.1 s < 1/5 s: the cached picture, no encode
    clock.now += 0.15
    second = feed.get_jpeg()
    assert second is not first and feed.encodes == 2 and drawn == [99, 100]
    clock.now += 1.0
    assert feed.get_jpeg() is second  # no new frame: nothing to encode
    image = cv2.imdecode(np.frombuffer(second, np.uint8), cv2.IMREAD_COLOR)
    # The box was drawn in the square class colour on the copy; the raw frame stayed clean.
    b, g, r = image[30, 16].astype(int)  # the box's left edge below its tag; square = magenta (255, 0, 255)
    assert b > 150 and r > 150 and g < 90 and np.abs(image[30, 30].astype(int) - 60).max() < 15
    assert (_result(0).raw == 60).all()


def test_systemd_notifier_pings_once_per_pace_and_masks_the_status(tmp_path):
    path = str(tmp_path / "n.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.5)
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "400000"}  # pace 0.1 s
    stats = Stats("rt", "int8", 1)
    stats.add_source("rtsp://admin:hunter2@cam/1")
    notifier = service.SystemdNotifier(stats, env=env)
    try:
        assert notifier.ready("started")
        start = time.monotonic()
        while time.monotonic() - start < 0.35:
            notifier.write(None)
            time.sleep(0.01)
        notifier.status({"type": "status", "event": "source_lost", "time": 1.0,
                         "source": "rtsp://admin:hunter2@cam/1", "reason": "no frame"})
        notifier.stopping()
        got = []
        while True:
            try:
                got.append(sock.recv(4096).decode())
            except socket.timeout:
                break
    finally:
        sock.close()
    pings = [g for g in got if g.startswith("WATCHDOG=1\nSTATUS=")]
    assert got[:2] == ["STATUS=started", "READY=1"] and got[-1] == "STOPPING=1"
    assert 3 <= len(pings) <= 5 and notifier.pings == len(pings)  # ~30 writes, 0.35 s at a 0.1 s pace
    assert "model int8" in pings[0] and "1 source(s)" in pings[0]
    lost = [g for g in got if g.startswith("STATUS=source_lost")]
    assert lost == ["STATUS=source_lost: source=rtsp://***:***@cam/1 reason=no frame"]
    assert not any("hunter2" in g for g in got)


def test_replace_workers_switches_between_frames_without_losing_any(tiny_bundle):  # noqa: F811
    stats, seen = Stats("rt", "int8", 1), []

    class Swapper(object):
        def write(self, result):
            seen.append((result.frame, result.model))
            if result.frame == 10:
                pipeline.replace_workers([cpu_worker(tiny_bundle, "float")])
    pipeline = Pipeline([open_source("synthetic:96x72@0")], [cpu_worker(tiny_bundle, "int8")], LABELS, [Swapper()],
                        stats, max_frames=30)
    pipeline.run()
    frames = [f for f, _ in seen]
    assert frames == list(range(1, 31))  # a file-like source: every frame, in order, none lost
    models = [m for _, m in seen]
    switch = models.index("float")
    # Frames the int8 worker already took (the bounded result queue, the finished one it hands
    # on before its next invoke, and the one in flight) finish on it; after that only float.
    assert 10 <= switch <= 10 + RESULT_QUEUE_SIZE + 2 and set(models[:switch]) == {"int8"} and set(models[switch:]) == {"float"}
    assert stats.model == "float" and pipeline.workers[0].model == "float"


def test_pipeline_rejects_negative_timeouts(tiny_bundle):  # noqa: F811
    with pytest.raises(ValueError, match="timeouts must be >= 0"):
        Pipeline([open_source("synthetic:64x64@0")], [cpu_worker(tiny_bundle, "int8")], LABELS, [], Stats(),
                 source_timeout_s=-1)
