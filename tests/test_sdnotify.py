"""app.sdnotify against real AF_UNIX datagram sockets, the way systemd listens.

systemd binds a SOCK_DGRAM socket (a path, or an abstract name shown with a leading "@"),
enables SO_PASSCRED to learn the sender's pid (that is how NotifyAccess=main is enforced)
and reads one datagram per notification. The tests bind the same kind of socket and
check the exact bytes and the sender pid.
"""

import array
import os
import socket
import struct
import uuid

import pytest

from app import sdnotify

needs_unix = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no AF_UNIX sockets")


def _listener(address):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(2.0)
    if hasattr(socket, "SO_PASSCRED"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    return sock


def _receive(sock):
    """One datagram -> (bytes, sender pid or None)."""
    size = struct.calcsize("3i")
    data, ancillary, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(size))
    pid = None
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == getattr(socket, "SCM_CREDENTIALS", -1):
            pid = array.array("i", payload[:size])[0]  # struct ucred {pid, uid, gid}
    return data, pid


@pytest.fixture
def path_socket(tmp_path):
    path = str(tmp_path / "notify")
    sock = _listener(path)
    yield sock, {"NOTIFY_SOCKET": path}
    sock.close()


@needs_unix
def test_path_socket_receives_exact_datagrams_from_this_pid(path_socket):
    sock, env = path_socket
    assert sdnotify.ready(env) is True
    assert sdnotify.watchdog(env) is True
    assert sdnotify.stopping(env) is True
    assert sdnotify.notify("STATUS=a\nWATCHDOG=1", env) is True
    received = [_receive(sock) for _ in range(4)]
    assert [d for d, _ in received] == [b"READY=1", b"WATCHDOG=1", b"STOPPING=1",
                                        b"STATUS=a\nWATCHDOG=1"]
    if hasattr(socket, "SCM_CREDENTIALS"):
        # What systemd checks for NotifyAccess=main: the datagram comes from our pid.
        assert {pid for _, pid in received} == {os.getpid()}


@needs_unix
def test_abstract_socket_with_at_prefix():
    name = "edgedet-test-{}".format(uuid.uuid4().hex)
    sock = _listener("\0" + name)
    try:
        assert sdnotify.ready({"NOTIFY_SOCKET": "@" + name}) is True
        assert _receive(sock)[0] == b"READY=1"
    finally:
        sock.close()


@needs_unix
def test_status_is_one_line_and_masks_credentials(path_socket):
    sock, env = path_socket
    sdnotify.status("lost rtsp://admin:pw@cam/1\nreconnecting", env)
    assert _receive(sock)[0] == b"STATUS=lost rtsp://***:***@cam/1 reconnecting"


def test_noop_without_notify_socket():
    assert sdnotify.ready({}) is False
    assert sdnotify.watchdog({"NOTIFY_SOCKET": ""}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": "vsock:2:1234"}) is False


def test_send_failure_is_reported_not_raised(tmp_path, caplog):
    missing = str(tmp_path / "nobody-listens")
    assert sdnotify.watchdog({"NOTIFY_SOCKET": missing}) is False
    assert "WATCHDOG=1" in caplog.text and "failed" in caplog.text


def test_rejects_malformed_state():
    with pytest.raises(ValueError, match="KEY=VALUE"):
        sdnotify.notify("READY", {})
    with pytest.raises(ValueError, match="expects a str"):
        sdnotify.status(3, {})


@pytest.mark.parametrize("env, expected", [
    ({"WATCHDOG_USEC": "30000000"}, 30.0),
    ({"WATCHDOG_USEC": "2500000", "WATCHDOG_PID": str(os.getpid())}, 2.5),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),  # not ours
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
    ({}, None),
])
def test_watchdog_interval(env, expected):
    assert sdnotify.watchdog_interval(env) == expected


def test_heartbeat_paces_pings_by_the_clock():
    now = [100.0]
    sent = []
    beat = sdnotify.Heartbeat(send=lambda: sent.append(now[0]), clock=lambda: now[0],
                              env={"WATCHDOG_USEC": "20000000"})
    assert beat.min_interval_s == 5.0  # a quarter of the 20 s watchdog
    for _ in range(300):  # 30 fps for 10 s
        beat.beat()
        now[0] += 1.0 / 30
    assert len(sent) == 2 and sent[1] - sent[0] == pytest.approx(5.0, abs=1.0 / 30)
    assert sdnotify.Heartbeat(env={}).min_interval_s == 1.0
    with pytest.raises(ValueError, match="min_interval_s"):
        sdnotify.Heartbeat(min_interval_s=-1)


@needs_unix
def test_heartbeat_default_sends_real_watchdog_datagrams(path_socket):
    sock, env = path_socket
    env = dict(env, WATCHDOG_USEC="4000000")
    now = [0.0]
    beat = sdnotify.Heartbeat(clock=lambda: now[0], env=env)
    assert [beat.beat(), beat.beat()] == [True, False]
    now[0] = 1.0
    assert beat.beat() is True
    assert [_receive(sock)[0] for _ in range(2)] == [b"WATCHDOG=1", b"WATCHDOG=1"]
