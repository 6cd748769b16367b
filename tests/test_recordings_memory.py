"""Memory over 20k frames of the real LiveApp with tracking, snapshots, clips and MQTT on (issue 15).

RSS is read from /proc/self/status (VmRSS: the whole process, native OpenCV and TFLite memory
included, which tracemalloc would not see) at frames 2000 (after warm-up), 11000 and 20000.
MQTT publishes to a real mosquitto on loopback (tests/mqtt_broker.py), discovery and snapshots on.
"""

import os
import time

import pytest
import yaml

from app import config
from app.live_app import LiveApp
from mqtt_broker import Broker, mqtt_config, write_password
from test_service_faults import _rss_mb

FRAMES = 20000
MARKS = (2000, 11000, 20000)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_memory_stays_flat_with_snapshots_clips_and_mqtt(tmp_path):
    broker = Broker(tmp_path).start()
    try:
        _run_and_check(tmp_path, broker)
    finally:
        broker.stop()


def _run_and_check(tmp_path, broker):
    path = tmp_path / "config.yaml"
    # Short clips and a small size limit, so clips are written and retention deletes during the run.
    path.write_text(yaml.safe_dump({
        "snapshots": {"enabled": True, "dir": str(tmp_path / "snaps"), "min_interval_s": 0.2, "max_total_mb": 2},
        "clips": {"enabled": True, "dir": str(tmp_path / "clips"), "max_clip_s": 3, "pre_capture_s": 2,
                  "post_capture_s": 1, "max_total_mb": 5},
        "mqtt": mqtt_config(broker.port, write_password(tmp_path), snapshot_interval_s=0.2)}))
    cfg = config.load_device_config(str(path))
    cfg = config.replace(cfg, reference=config.replace(cfg.reference, enabled=False),
                         app=config.replace(cfg.app, sources=["synthetic:320x240@0"], num_threads=1, headless=True,
                                            max_frames=FRAMES, events=str(tmp_path / "events.jsonl")))
    marks = {}

    class Probe(object):
        def write(self, result):
            if result.frame in MARKS:
                marks[result.frame] = _rss_mb()

    app = LiveApp(cfg, {"class_score_thresholds": {}}, str(path), extra_sinks=[Probe()])
    recorders = app.pipeline.sinks[:2]
    start = time.monotonic()
    assert app.start()
    app.wait()
    assert app.close() == 0
    snaps, clips = recorders
    growth = marks[20000] - marks[2000]
    mqtt = app.stats.snapshot()["outputs"]["mqtt"]
    print("RSS at frame 2000 {:.1f} MB, 11000 {:.1f} MB, 20000 {:.1f} MB: growth {:.2f} MB after warm-up; "
          "{:.0f} s, {} snapshot writes, {} clips, {} files deleted by retention, faults {} {}; mqtt {}".format(
              marks[2000], marks[11000], marks[20000], growth, time.monotonic() - start, snaps.written,
              clips.clips, snaps.retention.deleted + clips.retention.deleted, snaps.writer.faults.counts,
              clips.writer.faults.counts, mqtt))
    assert app.pipeline.processed == FRAMES and snaps.written > 10 and clips.clips >= 3
    assert mqtt["published"] > 100  # the broker received the run (drops are printed, not bounded)
    assert growth < 5.0 and marks[20000] - marks[11000] < 3.0  # measured: 0.71 MB over 18k frames
