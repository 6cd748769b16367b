"""`python -m app` with snapshots and clips on, in real processes: the files every event names exist
and are whole, the clip event, nothing half-written left; an unwritable folder at start is one line."""

import glob
import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import pytest

from app_support import free_port, start_app, stop_app, wait_for
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


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no /usr/bin/chromium")
def test_web_view_lists_recent_objects_with_thumbnails_in_chromium(tmp_path):
    """The real app with snapshots and the web view on; headless Chromium loads the page, which lists
    the recent objects with their thumbnails (served by /snapshots/...) right of the live picture."""
    import cv2
    port, snaps = free_port(), tmp_path / "snaps"
    cfg = tmp_path / "config.yaml"
    cfg.write_text("snapshots:\n  enabled: true\n  dir: {}\n".format(snaps))
    proc = start_app(["--config", str(cfg), "--source", "synthetic:320x240@15", "--runtime", "cpu", "--threads", "1",
                      "--no-reference", "--http", "127.0.0.1:{}".format(port)])
    base = "http://127.0.0.1:{}".format(port)
    png = tmp_path / "page.png"
    try:
        listed = wait_for(lambda: _listed_with_snapshots(base), 60)
        assert listed, "no object with a snapshot listed on /events"
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--user-data-dir={}".format(tmp_path / "profile"), "--screenshot={}".format(png),
                   "--window-size=1024,900", "--timeout=10000", base + "/"]  # a loaded host needs the time
        shot_run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
    finally:
        code, _, err = stop_app(proc)
    assert code == 0, err[-2000:]
    assert shot_run.returncode == 0, shot_run.stderr.decode(errors="replace")[-2000:]
    if os.environ.get("EDGEDET_SCREENSHOT"):
        shutil.copy(str(png), os.environ["EDGEDET_SCREENSHOT"])
    shot = cv2.imread(str(png)).astype(int)
    side = shot[60:, 330:]  # right of the 320 px live picture, below the green "live" mark
    # The stats are grey text on a near-black page: only the thumbnails (120 x 90 px copies of the
    # synthetic scene's colourful frames) put saturated pixels there.
    saturated = int((side.max(axis=2) - side.min(axis=2) > 60).sum())
    print("listed", listed, "saturated pixels right of the picture:", saturated)
    assert saturated > 0.3 * 120 * 90 * listed  # without thumbnails: 0 (text is grey)


def _listed_with_snapshots(base):
    try:
        with urllib.request.urlopen(base + "/events", timeout=5) as r:
            items = json.loads(r.read().decode())
    except (urllib.error.URLError, ConnectionError, ValueError):
        return None
    with_snapshot = [i for i in items if i["snapshot"]]
    return len(with_snapshot) if len(with_snapshot) >= 2 else None
