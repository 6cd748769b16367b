"""app.outputs.webview over real sockets on 127.0.0.1 (urllib), and in a real headless Chromium.

The frames fed to the view are JPEGs of a grey scene with a pure-green box drawn at a known
place, so a test can find the box again in what comes out of the stream (or the browser).
"""

import base64
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request

import cv2
import numpy as np
import pytest

from app.errors import UserError
from app.outputs.webview import WebView, is_loopback, parse_listen, read_credentials

GREEN = (0, 255, 0)  # BGR
BOX = (120, 80, 260, 200)  # x0, y0, x1, y1 pixels in a 400x300 frame


class Frames(object):
    """A latest-frame source: a fresh JPEG object per frame, the box drifting 2 px per frame."""

    def __init__(self):
        self.count = 0
        self.jpeg = None
        self.lock = threading.Lock()

    def next(self):
        image = np.full((300, 400, 3), 90, np.uint8)
        shift = 2 * (self.count % 5)
        x0, y0, x1, y1 = BOX
        cv2.rectangle(image, (x0 + shift, y0), (x1 + shift, y1), GREEN, 4)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        with self.lock:
            self.jpeg, self.count = data.tobytes(), self.count + 1

    def latest(self):
        with self.lock:
            return self.jpeg


def _green_mask(image_bgr):
    b, g, r = [image_bgr[..., i].astype(int) for i in range(3)]
    return (g > 180) & (r < 90) & (b < 90)


def _get(url, headers=None):
    """(status, headers, body) without raising on 4xx/5xx."""
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


@pytest.fixture
def frames():
    f = Frames()
    f.next()
    return f


@pytest.fixture
def make_view():
    views = []

    def make(frames, **kwargs):
        kwargs.setdefault("get_stats", lambda: {"fps": np.float32(29.5),
                                                "source": "rtsp://admin:hunter2@cam.lan/1"})
        kwargs.setdefault("last_frame_time", time.monotonic)
        view = WebView("127.0.0.1", 0, frames.latest, **kwargs).start()
        views.append(view)
        return view
    yield make
    for view in views:
        assert view.stop()


def test_loopback_routes_without_credentials(frames, make_view):
    view = make_view(frames)
    status, headers, page = _get(view.url)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b'<img id="live"' in page and b"/stream.mjpg" in page and b"/stats" in page
    status, headers, body = _get(view.url + "stats")
    stats = json.loads(body.decode())
    assert status == 200 and stats["fps"] == pytest.approx(29.5)
    assert stats["source"] == "rtsp://***:***@cam.lan/1"  # masked before it leaves
    assert b"hunter2" not in body and b"admin" not in body
    status, headers, body = _get(view.url + "snapshot.jpg")
    image = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and image.shape == (300, 400, 3)
    assert _get(view.url + "nope")[0] == 404


def test_snapshot_before_first_frame_is_503(make_view):
    view = make_view(Frames(), last_frame_time=lambda: None)
    assert _get(view.url + "snapshot.jpg")[0] == 503
    assert _get(view.url + "healthz")[0] == 503


def test_every_route_needs_credentials_when_set(frames, make_view):
    view = make_view(frames, credentials="s3cret-token")
    for route in ("", "stats", "healthz", "snapshot.jpg", "stream.mjpg", "nope"):
        status, headers, body = _get(view.url + route)
        assert status == 401, route
        assert headers["WWW-Authenticate"].startswith("Basic")
        assert b"jpeg" not in body.lower() and b"fps" not in body
    basic = {"Authorization": "Basic " + base64.b64encode(b"anyone:s3cret-token").decode()}
    wrong = {"Authorization": "Basic " + base64.b64encode(b"anyone:s3cret-tokem").decode()}
    assert _get(view.url + "stats", basic)[0] == 200
    assert _get(view.url + "stats", {"Authorization": "Bearer s3cret-token"})[0] == 200
    assert _get(view.url + "snapshot.jpg?token=s3cret-token")[0] == 200
    assert _get(view.url + "stats", wrong)[0] == 401
    assert _get(view.url + "stats", {"Authorization": "Bearer s3cret"})[0] == 401
    assert _get(view.url + "stats", {"Authorization": "Basic !!notbase64"})[0] == 401
    assert _get(view.url + "stats?token=")[0] == 401


def test_healthz_turns_503_ten_seconds_after_the_last_frame(frames, make_view):
    now = [1000.0]
    view = make_view(frames, clock=lambda: now[0], last_frame_time=lambda: 990.5)
    status, _, body = _get(view.url + "healthz")  # 9.5 s old
    assert status == 200 and json.loads(body.decode()) == {"healthy": True, "last_frame_age_s": 9.5}
    now[0] = 1000.6  # 10.1 s old
    status, _, body = _get(view.url + "healthz")
    assert status == 503 and json.loads(body.decode())["last_frame_age_s"] == pytest.approx(10.1)


def _read_parts(response, count):
    """Reads `count` JPEG parts from a multipart/x-mixed-replace response."""
    boundary = response.headers["Content-Type"].split("boundary=")[1].encode()
    parts = []
    while len(parts) < count:
        line = response.readline()
        if line.strip() != b"--" + boundary:
            continue
        headers = {}
        for header in iter(response.readline, b"\r\n"):
            key, _, value = header.decode().partition(":")
            headers[key.strip().lower()] = value.strip()
        assert headers["content-type"] == "image/jpeg"
        parts.append(response.read(int(headers["content-length"])))
    return parts


def test_mjpeg_stream_delivers_decodable_frames_with_the_box(frames, make_view):
    view = make_view(frames, max_fps=20)
    stop = threading.Event()

    def produce():
        while not stop.wait(0.03):
            frames.next()
    producer = threading.Thread(target=produce)
    producer.start()
    try:
        with urllib.request.urlopen(view.url + "stream.mjpg", timeout=5) as response:
            assert response.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            parts = _read_parts(response, 3)
    finally:
        stop.set()
        producer.join()
    assert len(set(parts)) == 3  # three different frames, not one re-sent
    x0, y0, x1, y1 = BOX
    for part in parts:
        image = cv2.imdecode(np.frombuffer(part, np.uint8), cv2.IMREAD_COLOR)
        ys, xs = np.nonzero(_green_mask(image))
        assert len(xs) > 500  # the 4 px outline of a 140x120 box
        assert ys.min() == pytest.approx(y0 - 2, abs=3) and ys.max() == pytest.approx(y1 + 2, abs=3)
        assert x0 - 3 <= xs.min() <= x0 + 8 + 3 and x1 - 3 <= xs.max() <= x1 + 8 + 3 + 2


def test_stop_closes_open_streams_within_one_second(frames, make_view):
    view = WebView("127.0.0.1", 0, frames.latest, dict, time.monotonic).start()
    url = view.url
    response = urllib.request.urlopen(url + "stream.mjpg", timeout=5)
    assert len(_read_parts(response, 1)[0]) > 1000
    started = time.monotonic()
    assert view.stop(timeout=1.0) is True
    elapsed = time.monotonic() - started
    assert elapsed < 1.0
    rest = response.read()  # the server closed the connection: EOF, not a hang
    response.close()
    assert len(rest) < 200000
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url, timeout=1)


def test_non_loopback_needs_credentials_or_insecure(frames):
    with pytest.raises(UserError, match="not loopback.*credentials_file.*--http-insecure"):
        WebView("0.0.0.0", 0, frames.latest, dict, time.monotonic)
    with pytest.raises(UserError, match="not loopback"):
        WebView("192.168.1.20", 8080, frames.latest, dict, time.monotonic)
    view = WebView("0.0.0.0", 0, frames.latest, dict, time.monotonic, credentials="pw").start()
    try:
        assert _get("http://127.0.0.1:{}/stats".format(view.port))[0] == 401
    finally:
        assert view.stop()
    view = WebView("0.0.0.0", 0, frames.latest, dict, time.monotonic, insecure=True).start()
    try:
        assert _get("http://127.0.0.1:{}/stats".format(view.port))[0] == 200
    finally:
        assert view.stop()


def test_bind_failure_is_a_user_error(frames, make_view):
    view = make_view(frames)
    with pytest.raises(UserError, match="cannot listen on 127.0.0.1:{}".format(view.port)):
        WebView("127.0.0.1", view.port, frames.latest, dict, time.monotonic).start()


def test_bad_arguments():
    with pytest.raises(ValueError, match="port must be"):
        WebView("127.0.0.1", 70000, bytes, dict, time.monotonic)
    with pytest.raises(ValueError, match="get_stats must be callable"):
        WebView("127.0.0.1", 0, bytes, {}, time.monotonic)
    with pytest.raises(ValueError, match="credentials"):
        WebView("127.0.0.1", 0, bytes, dict, time.monotonic, credentials="")


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:8080", ("127.0.0.1", 8080)), ("0.0.0.0:80", ("0.0.0.0", 80)),
    (":8080", ("127.0.0.1", 8080)), ("8080", ("127.0.0.1", 8080)),
    ("[::1]:9000", ("::1", 9000)), ("cam-box.local:8000", ("cam-box.local", 8000)),
])
def test_parse_listen(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["", "host:", "host:http", "1.2.3.4:99999"])
def test_parse_listen_rejects(text):
    with pytest.raises(UserError, match="expected HOST:PORT"):
        parse_listen(text)


def test_is_loopback():
    assert [is_loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "localhost")] == [True] * 4
    assert [is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.2", "box.local")] == [False] * 4


def test_read_credentials(tmp_path):
    path = tmp_path / "token"
    path.write_text("  correct horse battery\n")
    os.chmod(str(path), 0o600)
    assert read_credentials(str(path)) == "correct horse battery"
    path.write_text("\n\n")
    with pytest.raises(UserError, match="is empty"):
        read_credentials(str(path))
    with pytest.raises(UserError, match="missing: cannot read http.credentials_file"):
        read_credentials(str(tmp_path / "missing"))


CHROMIUM = "/usr/bin/chromium"


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no /usr/bin/chromium")
def test_page_in_headless_chromium_shows_the_stream_with_the_box(frames, make_view, tmp_path):
    stop = threading.Event()

    def produce():
        while not stop.wait(0.05):
            frames.next()
    producer = threading.Thread(target=produce)
    producer.start()
    view = make_view(frames, credentials="tok3n")
    png = tmp_path / "page.png"
    keep = os.environ.get("EDGEDET_SCREENSHOT")  # set it to keep the picture for a human
    # --timeout (real milliseconds), not --virtual-time-budget: virtual time only advances
    # while no network fetch is pending, and an MJPEG stream is a fetch that never ends, so
    # a virtual budget never runs out and Chromium hangs (seen with Chromium 156).
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--user-data-dir={}".format(tmp_path / "profile"),
               "--screenshot={}".format(png), "--window-size=1024,768",
               "--timeout=3000", view.url + "?token=tok3n"]
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                timeout=60)
    finally:
        stop.set()
        producer.join()
    assert result.returncode == 0, result.stderr.decode(errors="replace")[-2000:]
    if keep:
        shutil.copy(str(png), keep)
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[:2] == (768, 1024)
    ys, xs = np.nonzero(_green_mask(shot[:300, :400]))  # the side panel has green text
    # The <img> sits at the page's top-left corner at natural size (400x300), so the box
    # must appear where it was drawn; the token reached the stream (no 401, no broken image).
    x0, y0, x1, y1 = BOX
    assert len(xs) > 500
    assert ys.min() == pytest.approx(y0 - 2, abs=4) and ys.max() == pytest.approx(y1 + 2, abs=4)
    assert x0 - 4 <= xs.min() <= x0 + 12 and x1 - 4 <= xs.max() <= x1 + 14
    # The page's script filled the stats table (light text on the dark panel) and marked the
    # view live in green (#4c4) after /healthz answered 200.
    side = shot[:300, 400:]
    assert (side.max(axis=2) > 150).sum() > 200
    assert _green_mask(side).sum() > 20
