"""Faults the service must survive, or end cleanly for systemd to restart it.

- A network camera (tests/mjpeg_server.py, a real local HTTP MJPEG server) that stalls,
  then is off, then comes back: the app (a real subprocess) notices by the no-frame
  timeout, reports source_lost once, reconnects with backoff, reports source_reconnected,
  keeps processing, never exits, and never shows the camera password.
- A hung invoke: the Edge TPU hang cannot happen on this machine, so the interpreter is
  MOCKED (a wrapper around the real tiny-bundle interpreter whose invoke blocks once). The
  pipeline logs it, rebuilds the interpreter and carries on; when rebuilding fails it stops
  with exit code 4.
- Memory stays flat over 20k frames (slow).
"""

import json
import logging
import os
import threading
import time

import pytest

from app.inference import runtime
from app.model.bundle import load_bundle
from app.pipeline.threads import EXIT_INVOKE_HUNG, Pipeline
from app.capture.sources import open_source
from app.pipeline.stats import Stats
from app_support import THRESHOLDS, cpu_worker, read_events, start_app, stop_app, wait_for
from mjpeg_server import MjpegCamera
from tiny_bundle import tiny_bundle  # noqa: F401

LABELS = {0: "circle", 1: "square", 2: "triangle"}


def _statuses(path):
    return [e for e in read_events(path) if e["type"] == "status"]


def test_camera_that_stalls_and_goes_away_is_reconnected_and_the_app_keeps_running(tiny_bundle, tmp_path):  # noqa
    camera = MjpegCamera(fps=15.0, user="admin", password="hunter2").start()
    url = "http://admin:hunter2@127.0.0.1:{}/video.mjpg".format(camera.port)
    events, stats = str(tmp_path / "events.jsonl"), str(tmp_path / "stats.json")
    config = tmp_path / "config.yaml"
    config.write_text("app:\n  source_timeout_s: 1.5\n  sources: ['{}']\n".format(url))
    proc = start_app(["--config", str(config), "--model", tiny_bundle, "--runtime", "cpu", "--threads", "1",
                      "--events", events, "--stats", stats, "--headless", "--no-reference"])
    timeline = {}
    try:
        assert wait_for(lambda: len(read_events(events)) > 10, 60), "no frames from the camera"
        camera.mode = "stall"  # connection open, no frames
        timeline["stall"] = time.time()
        assert wait_for(lambda: "source_lost" in [e["event"] for e in _statuses(events)], 10)
        camera.mode = "refuse"  # the camera is off: reconnects fail for a while
        time.sleep(3.0)
        assert proc.poll() is None
        camera.mode = "serve"
        timeline["back"] = time.time()
        assert wait_for(lambda: "source_reconnected" in [e["event"] for e in _statuses(events)], 20)
        reconnected = [e for e in _statuses(events) if e["event"] == "source_reconnected"][0]["time"]
        assert wait_for(lambda: any(e["type"] == "detections" and e["time"] > reconnected
                                    for e in read_events(events)), 10)
        assert proc.poll() is None  # a camera that blinked never ends the process
    finally:
        code, _, err = stop_app(proc)
        camera.stop()
    assert code == 0, err[-2000:]
    status = _statuses(events)
    names = [e["event"] for e in status]
    assert names.count("source_lost") == 1 and names.count("source_reconnected") == 1
    lost = status[names.index("source_lost")]
    print("source_lost {:.2f} s after the stall: {}".format(lost["time"] - timeline["stall"], lost["reason"]))
    assert 1.0 <= lost["time"] - timeline["stall"] <= 4.0 and "no frame" in lost["reason"]
    assert names.index("source_lost") < names.index("source_reconnected")
    assert camera.connections >= 2
    # The password never reaches the log, the events or the stats; the masked name does.
    for text in (err, open(events).read(), open(stats).read()):
        assert "hunter2" not in text and "admin" not in text
    assert "http://***:***@127.0.0.1:{}/video.mjpg".format(camera.port) in open(stats).read()


# ----------------------------------------------------------------------------- hung invoke


class HangingInterpreter(object):
    """MOCK of an Edge TPU interpreter that hangs: invoke number `hang_at` blocks until released."""

    def __init__(self, inner, hang_at):
        self.inner, self.hang_at, self.calls = inner, hang_at, 0
        self.release = threading.Event()

    def invoke(self):
        self.calls += 1
        if self.calls == self.hang_at:
            self.release.wait(30.0)
        self.inner.invoke()


class Collect(object):
    def __init__(self):
        self.results, self.statuses = [], []

    def write(self, result):
        self.results.append(result)

    def status(self, message):
        self.statuses.append(dict(message))


def _hanging_pipeline(bundle_dir, rebuild, max_frames):
    worker = cpu_worker(bundle_dir)
    hanging = HangingInterpreter(worker.interpreter, hang_at=5)
    sink = Collect()
    pipeline = Pipeline([open_source("synthetic:96x72@50")], [worker._replace(interpreter=hanging)], LABELS, [sink],
                        Stats(), max_frames=max_frames, invoke_timeout_s=0.5, rebuild=rebuild)
    return pipeline, hanging, sink


def test_hung_invoke_is_logged_and_the_interpreter_rebuilt(tiny_bundle, caplog):  # noqa: F811
    rebuilt = []

    def rebuild(index, old):
        rebuilt.append((index, old.model))
        return cpu_worker(tiny_bundle)
    pipeline, hanging, sink = _hanging_pipeline(tiny_bundle, rebuild, max_frames=20)
    with caplog.at_level(logging.ERROR, logger="app.pipeline.threads"):
        start = time.monotonic()
        pipeline.start()
        pipeline.wait()
        elapsed = time.monotonic() - start
    hanging.release.set()  # let the abandoned thread finish; its frame must not be reported
    assert pipeline.join() == []  # the released thread saw it was given up on and ended
    names = [s["event"] for s in sink.statuses]
    print("20 frames with one hung invoke (timeout 0.5 s) took {:.2f} s".format(elapsed))
    assert rebuilt == [(0, "int8")] and pipeline.exit_code == 0 and len(sink.results) == 20
    assert names[:3] == ["started", "invoke_timeout", "interpreter_rebuilt"] and names[-1] == "stopped"
    timeout = sink.statuses[1]
    assert timeout["worker"] == 0 and 0.5 <= timeout["stuck_s"] < 2.0
    assert "stuck for" in caplog.text and "rebuilding the interpreter" in caplog.text
    assert hanging.calls == 5  # the hung interpreter was never used again


def test_hung_invoke_that_cannot_be_rebuilt_stops_with_exit_code_4(tiny_bundle, caplog):  # noqa: F811
    def rebuild(index, old):
        raise RuntimeError("Failed to load delegate from libedgetpu.so.1")
    pipeline, hanging, sink = _hanging_pipeline(tiny_bundle, rebuild, max_frames=0)
    with caplog.at_level(logging.ERROR, logger="app.pipeline.threads"):
        pipeline.start()
        deadline = time.monotonic() + 10
        while pipeline.running and time.monotonic() < deadline:
            time.sleep(0.05)
    hanging.release.set()
    pipeline.join()
    assert not pipeline.running and pipeline.exit_code == EXIT_INVOKE_HUNG == 4
    assert len(sink.results) == 4
    fatal = [s for s in sink.statuses if s["event"] == "fatal"][0]
    assert "rebuild failed" in fatal["reason"] and fatal["exit_code"] == 4
    assert "Failed to load delegate" in caplog.text and "exiting with code 4" in caplog.text


# ----------------------------------------------------------------------------- memory


def _rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS in /proc/self/status")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_memory_stays_flat_over_20k_frames(tiny_bundle, tmp_path):  # noqa: F811
    """20k frames through the whole pipeline with every sink the service uses (events, stats,
    reference guard sampling often, web view feed polled, systemd notifier)."""
    from app.outputs import overlay
    from app import service
    from app.config import ReferenceConfig
    from app.outputs.sinks import EventWriter, StatsWriter
    bundle = load_bundle(tiny_bundle)
    stats = Stats("test", "int8", 1)
    engine, key = runtime.open_bundle_engine(bundle, "cpu", "int8", num_threads=1)
    worker = cpu_worker(tiny_bundle)
    guard = service.ReferenceGuard(bundle, dict(THRESHOLDS, class_score_thresholds=None), engine, key,
                                   ReferenceConfig(interval_s=0.05, on_mismatch="warn"), 1, stats)
    feed = service.FrameFeed(overlay.draw_result, lambda: overlay.hud_text(stats), max_fps=20)
    sinks = [EventWriter(str(tmp_path / "events.jsonl")), StatsWriter(str(tmp_path / "stats.json"), stats),
             feed, guard, service.SystemdNotifier(stats, env={})]
    marks = {}

    class Probe(object):
        def write(self, result):
            if result.frame in (2000, 20000):
                marks[result.frame] = _rss_mb()
            if result.frame % 50 == 0:
                feed.get_jpeg()  # a web viewer
    pipeline = Pipeline([open_source("synthetic:96x72@0")], [worker], LABELS, sinks + [Probe()], stats,
                        max_frames=20000)
    guard.attach(pipeline)
    guard.start()
    start = time.monotonic()
    pipeline.run()
    guard.join()
    growth = marks[20000] - marks[2000]
    print("RSS after 2k frames {:.1f} MB, after 20k {:.1f} MB: growth {:.2f} MB; {:.0f} s, {} reference checks, "
          "{} JPEG encodes".format(marks[2000], marks[20000], growth, time.monotonic() - start,
                                  guard.checker.checks, feed.encodes))
    assert pipeline.processed == 20000 and guard.checker.checks > 10
    assert growth < 20.0
    json.load(open(str(tmp_path / "stats.json")))
