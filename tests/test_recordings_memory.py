"""Memory over 20k frames of the real LiveApp with tracking, snapshots and clips on (issue 15).

RSS is read from /proc/self/status (VmRSS: the whole process, native OpenCV and TFLite memory
included, which tracemalloc would not see) at frames 2000 (after warm-up), 11000 and 20000.
(MQTT is not on: no tests/mqtt_broker.py broker fixture exists yet.)
"""

import os
import time

import pytest

from app import config
from app.live_app import LiveApp
from test_service_faults import _rss_mb

FRAMES = 20000
MARKS = (2000, 11000, 20000)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs /proc")
def test_memory_stays_flat_with_snapshots_and_clips(tmp_path):
    path = tmp_path / "config.yaml"
    # Short clips and a small size limit, so clips are written and retention deletes during the run.
    path.write_text("snapshots:\n  enabled: true\n  dir: {}\n  min_interval_s: 0.2\n  max_total_mb: 2\n"
                    "clips:\n  enabled: true\n  dir: {}\n  max_clip_s: 3\n  pre_capture_s: 2\n  post_capture_s: 1\n"
                    "  max_total_mb: 5\n".format(tmp_path / "snaps", tmp_path / "clips"))
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
    print("RSS at frame 2000 {:.1f} MB, 11000 {:.1f} MB, 20000 {:.1f} MB: growth {:.2f} MB after warm-up; "
          "{:.0f} s, {} snapshot writes, {} clips, {} files deleted by retention, faults {} {}".format(
              marks[2000], marks[11000], marks[20000], growth, time.monotonic() - start, snaps.written,
              clips.clips, snaps.retention.deleted + clips.retention.deleted, snaps.writer.faults.counts,
              clips.writer.faults.counts))
    assert app.pipeline.processed == FRAMES and snaps.written > 10 and clips.clips >= 3
    assert growth < 5.0 and marks[20000] - marks[11000] < 3.0  # measured: 0.71 MB over 18k frames
