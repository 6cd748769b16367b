"""The app as a systemd Type=notify service, tested against a REAL NOTIFY_SOCKET datagram
socket with the app running as a real subprocess (systemd itself is not involved: the test
plays its part by reading the datagrams).

- READY=1 arrives after warm-up, before any WATCHDOG=1;
- WATCHDOG=1 comes only from the output stage after a frame went all the way through:
  with a camera that delivers no frames there is none, with frames there are, paced;
- SIGTERM: STOPPING=1, all threads joined, exit 0 within 2 s.
"""

import json
import socket
import time

import pytest

from app_support import start_app, stop_app
from tiny_bundle import tiny_bundle  # noqa: F401

WATCHDOG_USEC = 2000000  # 2 s: the app paces pings at a quarter of it (0.5 s)


@pytest.fixture
def notify_socket(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.1)
    yield path, sock
    sock.close()


class Datagrams(object):
    """Everything received on the socket, with arrival times."""

    def __init__(self, sock):
        self.sock, self.items = sock, []

    def drain(self, seconds):
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            self.items.append((time.monotonic(), data.decode("utf-8")))
        return self

    def until(self, key, timeout):
        """Drains until a datagram with the line `key` arrived; returns its arrival time or None."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            hit = self.first(key)
            if hit is not None:
                return hit
            self.drain(0.2)
        return self.first(key)

    def first(self, key):
        for t, text in self.items:
            if key in text.split("\n"):
                return t
        return None

    def count(self, key):
        return sum(1 for _, text in self.items if key in text.split("\n"))

    def lines(self, prefix):
        return [line for _, text in self.items for line in text.split("\n") if line.startswith(prefix)]


def _start(tiny_bundle, path, source, tmp_path):  # noqa: F811
    stats = str(tmp_path / "stats.json")
    proc = start_app(["--model", tiny_bundle, "--source", source, "--runtime", "cpu", "--threads", "1",
                      "--stats", stats, "--headless"],
                     env={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    return proc, stats


def test_no_frames_means_ready_but_no_watchdog_and_sigterm_exits_0_fast(tiny_bundle, notify_socket,
                                                                         tmp_path):  # noqa: F811
    path, sock = notify_socket
    got = Datagrams(sock)
    # A camera at 0.02 fps: its first frame is 50 s away, so nothing reaches the output stage.
    proc, stats = _start(tiny_bundle, path, "synthetic:64x64@0.02", tmp_path)
    try:
        assert got.until("READY=1", 60) is not None, "no READY=1"
        got.drain(3.0)  # six watchdog periods' worth of pings would have come by now
    finally:
        code, seconds, err = stop_app(proc)
    got.drain(0.3)
    print("SIGTERM -> exit: {:.2f} s".format(seconds))
    assert code == 0, err[-2000:]
    assert seconds < 2.0
    assert got.count("WATCHDOG=1") == 0
    assert got.count("STOPPING=1") == 1 and got.first("STOPPING=1") > got.first("READY=1")
    assert any(line.startswith("STATUS=started: model int8") for line in got.lines("STATUS="))
    assert json.load(open(stats))["sources"]["synthetic:64x64@0.02"]["processed"] == 0
    assert "threads still running" not in err


def test_watchdog_only_after_frames_went_through_and_paced(tiny_bundle, notify_socket, tmp_path):  # noqa: F811
    path, sock = notify_socket
    got = Datagrams(sock)
    proc, stats = _start(tiny_bundle, path, "synthetic:96x72@30", tmp_path)
    try:
        ready = got.until("READY=1", 60)
        assert ready is not None, "no READY=1"
        first = got.until("WATCHDOG=1", 10)
        window_start = time.monotonic()
        got.drain(3.0)
        window = time.monotonic() - window_start
    finally:
        code, seconds, err = stop_app(proc)
    assert code == 0 and seconds < 2.0, err[-2000:]
    assert first is not None and first > ready
    pings = [t for t, text in got.items if "WATCHDOG=1" in text.split("\n") and t >= window_start]
    print("{} WATCHDOG pings in {:.1f} s at 30 fps (pace 0.5 s)".format(len(pings), window))
    assert 3 <= len(pings) <= window / 0.5 + 1
    assert all(b - a >= 0.45 for a, b in zip(pings, pings[1:]))
    assert any(" fps | model int8 | " in line for line in got.lines("STATUS="))
    processed = json.load(open(stats))["sources"]["synthetic:96x72@30"]["processed"]
    assert processed >= 30  # frames went through; pings were far fewer than frames
