"""systemd's sd_notify protocol: one datagram of "KEY=VALUE" lines to $NOTIFY_SOCKET.

No dependency: the protocol is a single sendto() on an AF_UNIX SOCK_DGRAM socket. systemd
sets NOTIFY_SOCKET for `Type=notify` units, either a path ("/run/systemd/notify") or an
abstract address written with a leading "@". Outside systemd the variable is unset and
every function here is a no-op returning False, so the app runs the same from a shell.

With `NotifyAccess=main` systemd accepts messages only from the main PID; it reads the
sender from the socket credentials, which the kernel attaches to every datagram.

Watchdog semantics in edgedet: `watchdog()` is sent by the output stage after a frame has
gone all the way through (capture, inference, decode, output), never from a timer, so a
hung camera or accelerator stops the pings and systemd restarts the service. `Heartbeat`
paces those pings so a 30 fps pipeline does not send 30 datagrams a second.
"""

import logging
import os
import socket
import time

from app.redact import redact

log = logging.getLogger(__name__)


def _socket_address(env):
    """NOTIFY_SOCKET -> an address for socket.sendto, or None when unset/unsupported."""
    addr = env.get("NOTIFY_SOCKET", "")
    if not addr:
        return None
    if addr.startswith("@"):  # abstract namespace: leading NUL byte instead of "@"
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    # e.g. "vsock:..." (systemd >= 253 inside VMs); not used on the boards we target.
    log.warning("NOTIFY_SOCKET=%r is not a unix socket address; not notifying systemd", addr)
    return None


def notify(state, env=None):
    """Sends one notification datagram, e.g. "READY=1" or "STATUS=...\\nWATCHDOG=1".

    Args:
      state: newline-separated KEY=VALUE assignments (str).
      env: environment mapping; os.environ by default (tests pass their own).

    Returns:
      True when the datagram was sent; False when NOTIFY_SOCKET is unset or sending failed
      (a failure is logged: systemd then restarts us through the watchdog, which is right).

    Raises:
      ValueError: `state` is not a non-empty str of KEY=VALUE lines.
    """
    if not isinstance(state, str) or "=" not in state:
        raise ValueError("notify expects 'KEY=VALUE' lines, received {!r}".format(state))
    address = _socket_address(os.environ if env is None else env)
    if address is None:
        return False
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.sendto(state.encode("utf-8"), address)
        return True
    except OSError as e:
        log.warning("sd_notify %r to %r failed: %s", state.split("\n")[0], address, e)
        return False
    finally:
        sock.close()


def ready(env=None):
    """READY=1: start-up (model loaded, warm-up inference done) is complete."""
    return notify("READY=1", env)


def watchdog(env=None):
    """WATCHDOG=1: a frame went all the way through; resets systemd's WatchdogSec timer."""
    return notify("WATCHDOG=1", env)


def stopping(env=None):
    """STOPPING=1: shutdown has begun (SIGTERM received)."""
    return notify("STOPPING=1", env)


def status(text, env=None):
    """STATUS=<text>: one line shown by `systemctl status`; credentials are masked.

    Newlines would start a new assignment in the datagram, so they become spaces.
    """
    if not isinstance(text, str):
        raise ValueError("status expects a str, received {}".format(type(text).__name__))
    return notify("STATUS=" + redact(text).replace("\r", " ").replace("\n", " "), env)


def watchdog_interval(env=None):
    """The watchdog timeout systemd expects pings within, in seconds.

    Reads WATCHDOG_USEC; when WATCHDOG_PID is set it must be this process (otherwise the
    watchdog belongs to a parent, e.g. a wrapper shell, and we must not ping).

    Returns:
      float seconds, or None when no watchdog applies to this process.
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "")
    try:
        if pid and int(pid) != os.getpid():
            return None
        value = int(usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r / WATCHDOG_PID=%r", usec, pid)
        return None
    return value / 1e6 if value > 0 else None


class Heartbeat(object):
    """Paces WATCHDOG=1 pings from the output stage: at most one per `min_interval_s`.

    Call `beat()` each time a frame has completed; it pings only when enough time has
    passed. The default pace is a quarter of the watchdog timeout (systemd recommends
    pinging at half the timeout or more often), or 1 s when there is no watchdog.
    """

    def __init__(self, min_interval_s=None, send=None, clock=time.monotonic, env=None):
        """Args:
          min_interval_s: seconds between pings; None derives it from WATCHDOG_USEC.
          send: callable() -> bool that pings; `watchdog` by default.
          clock: monotonic clock in seconds (tests inject one).
          env: environment mapping for the defaults; os.environ by default.
        """
        if min_interval_s is None:
            timeout = watchdog_interval(env)
            min_interval_s = timeout / 4.0 if timeout else 1.0
        if min_interval_s < 0:
            raise ValueError("min_interval_s must be >= 0, received {}".format(min_interval_s))
        self.min_interval_s = float(min_interval_s)
        self._send = send or (lambda: watchdog(env))
        self._clock = clock
        self._last = None

    def beat(self):
        """Pings if at least min_interval_s passed since the last ping; returns True if it did."""
        now = self._clock()
        if self._last is not None and now - self._last < self.min_interval_s:
            return False
        self._last = now
        self._send()
        return True
