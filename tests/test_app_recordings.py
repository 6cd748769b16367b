"""`python -m app` with snapshots and clips on, in real processes: the files every event names exist
and are whole, the clip event, nothing half-written left; an unwritable folder at start is one line."""

import glob
import json
import os

from test_app_cli import _assert_user_error, _run


def test_run_saves_snapshots_and_a_clip(tmp_path):
    import cv2
    cfg = tmp_path / "config.yaml"
    snaps, clips = tmp_path / "snaps", tmp_path / "clips"
    cfg.write_text("snapshots:\n  enabled: true\n  dir: {}\nclips:\n  enabled: true\n  dir: {}\n  fps: 30\n"
                   .format(snaps, clips))
    code, out, lines = _run("--config", str(cfg), "--source", "synthetic:320x240@30", "--max-frames", "90",
                            "--events", "-", "--no-reference", "--threads", "1", "--headless")
    assert code == 0, lines
    events = [json.loads(line) for line in out.splitlines()]
    ended = [e for e in events if e["type"] == "object" and e["event"] == "end"]
    assert len(ended) >= 2
    for e in ended:  # the end events (at the stop) name finished files of the right object
        assert e["snapshot"] == os.path.join(str(snaps), "synthetic_320x240_30",
                                             "synthetic_320x240_30-{:.3f}-{}.jpg".format(e["start_time"], e["id"]))
        for path in (e["snapshot"], e["snapshot"][:-4] + "-clean.jpg"):
            assert cv2.imread(path).shape == (240, 320, 3)
    named = [e["snapshot"] for e in events if e.get("snapshot")]
    assert all(os.path.exists(p) for p in named)
    clip_events = [e for e in events if e.get("event") == "clip"]
    assert len(clip_events) == 1, clip_events
    clip = clip_events[0]
    reader = cv2.VideoCapture(clip["clip"])
    assert int(reader.get(cv2.CAP_PROP_FRAME_COUNT)) == clip["frames"] >= 60  # 3 s at 30 fps, minus warm-up
    assert set(clip["objects"]) == {e["id"] for e in ended}
    leftovers = glob.glob(str(tmp_path / "**" / ".*"), recursive=True)
    assert leftovers == []


def test_unwritable_snapshot_folder_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cfg = tmp_path / "config.yaml"
    cfg.write_text("snapshots:\n  enabled: true\n  dir: {}\n".format(blocker / "snaps"))
    _assert_user_error(["--config", str(cfg), "--headless", "--no-reference", "--source", "synthetic:320x240@0"],
                       "config.yaml: snapshots.dir: ", "is not a writable folder")
