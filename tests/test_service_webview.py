"""The web view of a REAL `python -m app` process, looked at by headless Chromium.

The camera is a looping video of one synthetic scene (every frame identical, so every
frame has the same detections); the page's <img> shows the stream at its natural size
at the page's top-left corner, so each box reported in --events must appear in the
screenshot at its pixel position, in its class colour. Off loopback (0.0.0.0 with a
credentials file) a request without the token gets 401. Connections go to 127.0.0.1:
nothing leaves this machine.
"""

import json
import os
import shutil
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

from app.outputs import overlay
from app.capture import synthetic
from app_support import free_port, read_events, start_app, stop_app, wait_for
from tiny_bundle import tiny_bundle  # noqa: F401

CHROMIUM = "/usr/bin/chromium"
WIDTH, HEIGHT = 320, 240
HUD_ROWS = 26


def _get(url, headers=None):
    """(status, body) without raising on 4xx/5xx; None when nothing answers yet."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except (urllib.error.URLError, ConnectionError):
        return None


@pytest.fixture(scope="module")
def still_video(tmp_path_factory):
    """A 2 s MJPG video (10 fps) of one unchanging synthetic scene."""
    import cv2
    path = str(tmp_path_factory.mktemp("video") / "still.avi")
    image, _, _ = synthetic.render_scene(np.random.RandomState(3), HEIGHT, WIDTH)
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (WIDTH, HEIGHT))
    for _ in range(20):
        writer.write(image)
    writer.release()
    return path


def _edge_hits(shot, box, colour):
    """Fraction of points sampled on the box's four edges that show `colour` (+-40 per channel)."""
    x0, y0, x1, y1 = [int(round(v)) for v in box]
    points = [(x, y) for y in np.linspace(y0 + 3, y1 - 3, 12).astype(int) for x in (x0, x1)]
    points += [(x, y) for x in np.linspace(x0 + 3, x1 - 3, 12).astype(int) for y in (y0, y1)]
    inside = [(x, y) for x, y in points if 0 <= x < WIDTH and HUD_ROWS <= y < HEIGHT]
    return float(np.mean([np.abs(shot[y, x].astype(int) - colour).max() <= 40 for x, y in inside]))


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no /usr/bin/chromium")
def test_page_in_headless_chromium_shows_the_boxes_the_events_report(tiny_bundle, still_video,
                                                                     tmp_path):  # noqa: F811
    import cv2
    port, events_path, token = free_port(), str(tmp_path / "events.jsonl"), "s3cret-token"
    secret = tmp_path / "token"
    secret.write_text(token + "\n")
    os.chmod(str(secret), 0o600)
    proc = start_app(["--model", tiny_bundle, "--source", still_video, "--loop", "--realtime", "--runtime", "cpu",
                      "--threads", "1", "--max-detections", "2", "--events", events_path,
                      "--http", "0.0.0.0:{}".format(port), "--http-credentials", str(secret)])
    base = "http://127.0.0.1:{}".format(port)
    png = tmp_path / "page.png"
    try:
        assert wait_for(lambda: _get(base + "/healthz?token=" + token), 60), "web view never answered"
        assert wait_for(lambda: _get(base + "/healthz?token=" + token)[0] == 200, 20)
        # Off loopback every route needs the token; connecting via 127.0.0.1 changes nothing.
        for route in ("/", "/stream.mjpg", "/snapshot.jpg", "/stats", "/healthz"):
            assert _get(base + route)[0] == 401, route
        assert _get(base + "/stats", {"Authorization": "Bearer wrong"})[0] == 401
        code, body = _get(base + "/stats", {"Authorization": "Bearer " + token})
        stats = json.loads(body.decode())
        assert code == 200 and stats["sources"][still_video]["processed"] > 0 and stats["model"] == "int8"
        command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                   "--disable-background-networking", "--disable-component-update", "--disable-sync",
                   "--user-data-dir={}".format(tmp_path / "profile"), "--screenshot={}".format(png),
                   "--window-size=1024,768", "--timeout=4000", base + "/?token=" + token]
        shot_run = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=90)
    finally:
        code, seconds, err = stop_app(proc)
    assert code == 0 and seconds < 2.0, err[-2000:]
    assert shot_run.returncode == 0, shot_run.stderr.decode(errors="replace")[-2000:]
    if os.environ.get("EDGEDET_SCREENSHOT"):  # keep the picture for a human to look at
        shutil.copy(str(png), os.environ["EDGEDET_SCREENSHOT"])
    assert token not in err

    frames = [e for e in read_events(events_path) if e["type"] == "detections"]
    assert len(frames) > 5
    boxes = frames[-1]["detections"]
    assert len(boxes) > 0 and all(f["detections"] == boxes for f in frames[-5:])  # a still scene
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[:2] == (768, 1024)
    for det in boxes:
        hits = _edge_hits(shot, det["box"], overlay.class_colour(det["class_id"]))
        print("box", det["label"], det["box"], "edge pixels in its colour: {:.2f}".format(hits))
        assert hits >= 0.6
    # Right of the 320 px picture: the stats table (light text) and the green "live" mark.
    side = shot[:300, WIDTH + 10:]
    assert (side.max(axis=2) > 150).sum() > 200
    b, g, r = [side[..., i].astype(int) for i in range(3)]
    assert ((g > 150) & (r < 120) & (b < 120)).sum() > 20


def test_non_loopback_without_credentials_refuses_to_start(tiny_bundle):  # noqa: F811
    proc = start_app(["--model", tiny_bundle, "--source", "synthetic:64x64@5", "--runtime", "cpu",
                      "--http", "0.0.0.0:{}".format(free_port())])
    _, err = proc.communicate(timeout=60)
    lines = [line for line in err.splitlines() if line.startswith("edgedet: error:")]
    assert proc.returncode == 2 and len(lines) == 1
    assert "is not loopback" in lines[0] and "--http-insecure" in lines[0]


def test_http_section_insecure_serves_without_credentials(tiny_bundle, tmp_path):  # noqa: F811
    port = free_port()
    config = tmp_path / "config.yaml"
    config.write_text("http:\n  listen: '0.0.0.0:{}'\n  insecure: true\n".format(port))  # the config, no flags
    proc = start_app(["--config", str(config), "--model", tiny_bundle, "--source", "synthetic:64x64@10",
                      "--runtime", "cpu", "--threads", "1"])
    try:
        got = wait_for(lambda: _get("http://127.0.0.1:{}/snapshot.jpg".format(port)), 60)
        got = wait_for(lambda: _get("http://127.0.0.1:{}/snapshot.jpg".format(port))[0] == 200, 10) and \
            _get("http://127.0.0.1:{}/snapshot.jpg".format(port))
    finally:
        code, _, err = stop_app(proc)
    assert code == 0, err[-2000:]
    assert got and got[0] == 200 and got[1][:2] == b"\xff\xd8"  # a JPEG
    assert "WITHOUT credentials (--http-insecure)" in err
