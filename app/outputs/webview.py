"""The web view: live MJPEG stream, snapshot, stats and health over HTTP, for headless boxes.

Routes: `/` (page: live view, stats, recent objects with their snapshots), `/stream.mjpg`
(multipart/x-mixed-replace JPEG stream), `/snapshot.jpg`, `/stats` (JSON), `/healthz` (200 while
frames complete, else 503), `/events` (JSON list of the recent objects, newest first) and
`/snapshots/<source>/<file>.jpg` (a saved snapshot; only .jpg files inside the snapshots folder).

The server knows nothing of the pipeline: it calls the functions the pipeline gives it
(latest JPEG, stats dict, time of the last completed frame, recent objects). Off loopback, credentials are
required and checked on every request, the stream included; everything it sends out passes
through `app.redact` so camera passwords never reach the browser.
"""

import base64
import hmac
import ipaddress
import json
import logging
import os
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from app.errors import UserError
from app.redact import redact, redact_value
from app.textfile import read_text

log = logging.getLogger(__name__)

HEALTHY_WITHIN_S = 10.0
SNAPSHOTS_ROUTE = "/snapshots/"
_BOUNDARY = "edgedet-frame"

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>edgedet</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{margin:0;background:#111;color:#ddd;font:14px sans-serif;display:flex;flex-wrap:wrap;align-items:flex-start}
#live{max-width:100%;height:auto;display:block;background:#000}
#side{padding:8px 16px;flex:1 1 220px;min-width:220px}
td{padding:1px 8px 1px 0;vertical-align:top;overflow-wrap:anywhere}
td:first-child{color:#8ab}
#health{font-weight:bold}
#objects{list-style:none;padding:0;margin:0}
#objects li{display:flex;gap:8px;align-items:center;margin:4px 0}
#objects img{width:120px;height:auto;background:#000}
</style></head>
<body>
<img id="live" alt="live view" width="640" height="480">
<div id="side"><h3>edgedet <span id="health"></span></h3><table id="stats"></table>
<h3>Recent objects</h3><ul id="objects"></ul></div>
<script>
// A ?token= in the page URL is passed on to the stream and the stats requests. The <img>
// gets its src only here: a first request without the token would draw a 401 challenge.
var token = new URLSearchParams(location.search).get("token");
var q = token ? "?token=" + encodeURIComponent(token) : "";
var live = document.getElementById("live");
live.onload = function () { live.removeAttribute("width"); live.removeAttribute("height"); };
live.src = "/stream.mjpg" + q;
function rows(obj, prefix, out) {
  Object.keys(obj).forEach(function (k) {
    var v = obj[k], name = prefix ? prefix + "." + k : k;
    if (v !== null && typeof v === "object" && !Array.isArray(v)) { rows(v, name, out); }
    else { out.push([name, typeof v === "number" ? +v.toFixed(3) : JSON.stringify(v)]); }
  });
  return out;
}
function poll() {
  fetch("/stats" + q, {cache: "no-store"}).then(function (r) { return r.json(); })
  .then(function (s) {
    var t = document.getElementById("stats");
    t.textContent = "";
    rows(s, "", []).forEach(function (kv) {
      var tr = t.insertRow(), a = tr.insertCell(), b = tr.insertCell();
      a.textContent = kv[0]; b.textContent = kv[1];
    });
  }).catch(function () {});
  fetch("/healthz" + q, {cache: "no-store"}).then(function (r) {
    var h = document.getElementById("health");
    h.textContent = r.ok ? "live" : "stalled"; h.style.color = r.ok ? "#4c4" : "#e44";
  }).catch(function () {});
}
var shown = "";
function listObjects() {
  fetch("/events" + q, {cache: "no-store"}).then(function (r) { return r.json(); })
  .then(function (items) {
    var text = JSON.stringify(items);
    if (text === shown) { return; }  // unchanged: keep the thumbnails already loaded
    shown = text;
    var ul = document.getElementById("objects");
    ul.textContent = "";
    items.forEach(function (o) {
      var li = document.createElement("li");
      if (o.snapshot) {
        var img = document.createElement("img");
        img.src = "/snapshots/" + o.snapshot.split("/").map(encodeURIComponent).join("/") + q;
        img.alt = o.label + " #" + o.id;
        li.appendChild(img);
      }
      var span = document.createElement("span");
      var when = new Date(o.start_time * 1000).toLocaleTimeString();
      span.textContent = o.label + " #" + o.id + " " + Math.round(o.top_score * 100) + "% " + o.event +
        " " + when + (o.entered_zones.length ? " zones: " + o.entered_zones.join(", ") : "") +
        (o.clip ? " clip: " + o.clip : "");
      li.appendChild(span);
      ul.appendChild(li);
    });
  }).catch(function () {});
}
poll(); setInterval(poll, 1000);
listObjects(); setInterval(listObjects, 2000);
</script></body></html>
"""


def is_loopback(host):
    """True for 127.0.0.0/8, ::1 and "localhost"; False for wildcard and other addresses."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything, so treat it as exposed
        return False


def parse_listen(text):
    """Parses `--http` / http.listen: "HOST:PORT", "[V6]:PORT", ":PORT" or "PORT".

    A missing host means 127.0.0.1: the view is exposed only when asked for.

    Returns:
      (host str, port int).

    Raises:
      UserError: not HOST:PORT with a port in 0..65535.
    """
    text = (text or "").strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "", text
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise UserError("http.listen / --http: expected HOST:PORT (e.g. 127.0.0.1:8080 or "
                        "0.0.0.0:8080), got {!r}".format(text))
    return host, int(port)


def read_credentials(path):
    """Reads the web view password/token: the file's content without surrounding whitespace.

    Raises:
      UserError: the file is missing, unreadable or empty.
    """
    secret = read_text(path, "http.credentials_file", "Create it with one line holding the password/token, "
                       "readable by the edgedet user only.").strip()
    if not secret:
        raise UserError("http.credentials_file: {} is empty. Put the password/token on its "
                        "first line.".format(path))
    if os.stat(path).st_mode & 0o077:
        log.warning("%s is readable by other users; chmod 600 (or 640 root:edgedet) it", path)
    return secret


def check_exposure(host, port, credentials, insecure):
    """UserError for a non-loopback bind without credentials, unless `insecure`."""
    if credentials is None and not is_loopback(host) and not insecure:
        raise UserError("http.listen {}:{} is not loopback: set http.credentials_file to "
                        "a file holding a password, bind 127.0.0.1, or pass "
                        "--http-insecure to expose it without one".format(host, port))


def saved_snapshot_path(folder, name):
    """The file of `/snapshots/<name>`, or None: `name` must be a .jpg inside `folder` (after following
    links and "..") whose parts do not start with "." (no temp files, no escape)."""
    if not folder or not name.endswith(".jpg") or any(part.startswith(".") for part in name.split("/")):
        return None
    root = os.path.realpath(folder)
    path = os.path.realpath(os.path.join(root, name))
    return path if path.startswith(root + os.sep) else None


def _offered_secrets(headers, query):
    """Every secret the request offers: Basic password (any user), Bearer token, ?token=."""
    offered = list(query.get("token", []))
    auth = headers.get("Authorization", "")
    scheme, _, value = auth.partition(" ")
    if scheme.lower() == "bearer":
        offered.append(value.strip())
    elif scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except ValueError:  # binascii.Error and UnicodeDecodeError are ValueErrors
            return offered  # a malformed header offers nothing: 401 unless ?token= matches
        offered.append(decoded.partition(":")[2])
    return offered


def _authorized(secret, headers, query):
    expected = secret.encode("utf-8")
    # compare_digest keeps the comparison time independent of where the strings differ.
    return any(hmac.compare_digest(o.encode("utf-8"), expected)
               for o in _offered_secrets(headers, query))


def _json_default(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):  # numpy arrays
        return value.tolist()
    return str(value)


class _Server(ThreadingHTTPServer):
    """A threaded HTTP server whose request threads and sockets the WebView can close and join."""
    allow_reuse_address = True

    def __init__(self, address, view):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.view = view
        ThreadingHTTPServer.__init__(self, address, _Handler)

    def process_request(self, request, client_address):
        # Our own daemon threads, registered before they start, so stop() can close every
        # connection and join every thread. (ThreadingMixIn would keep every thread object
        # ever made on Python 3.7, a leak for a server polled once a second for months.)
        thread = threading.Thread(target=self.process_request_thread,
                                  args=(request, client_address), name="edgedet-http-request")
        thread.daemon = True
        self.view._track(request, thread)
        thread.start()

    def shutdown_request(self, request):
        self.view._untrack(request)
        ThreadingHTTPServer.shutdown_request(self, request)

    def handle_error(self, request, client_address):
        error = sys.exc_info()[1]
        if isinstance(error, OSError):  # the viewer closed the page mid-response
            log.debug("http client %s went away: %s", client_address[0], error)
        else:
            log.exception("web view request from %s failed", client_address[0])


class _Handler(BaseHTTPRequestHandler):
    server_version = "edgedet"
    sys_version = ""
    timeout = 10  # a client that connects and sends nothing is dropped

    def log_message(self, fmt, *args):
        log.debug("%s %s", self.address_string(), redact(fmt % args))

    def do_GET(self):
        view = self.server.view
        url = urlsplit(self.path)
        if view.credentials is not None and not _authorized(
                view.credentials, self.headers, parse_qs(url.query)):
            self._send(401, b"authentication required\n", "text/plain",
                       {"WWW-Authenticate": 'Basic realm="edgedet", charset="UTF-8"'})
            return
        route = {"/": self._page, "/index.html": self._page, "/stats": self._stats,
                 "/healthz": self._healthz, "/snapshot.jpg": self._snapshot,
                 "/stream.mjpg": self._stream, "/events": self._events}.get(url.path)
        if route is None and url.path.startswith(SNAPSHOTS_ROUTE):
            self._saved_snapshot(view, unquote(url.path[len(SNAPSHOTS_ROUTE):]))
        elif route is None:
            self._send(404, b"not found\n", "text/plain")
        else:
            route(view)

    def _send(self, code, body, content_type, extra=None):
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _page(self, view):
        self._send(200, view.page, "text/html; charset=utf-8")

    def _stats(self, view):
        body = json.dumps(redact_value(view.get_stats()), default=_json_default, sort_keys=True)
        self._send(200, body.encode("utf-8"), "application/json")

    def _events(self, view):
        body = json.dumps(redact_value(view.get_events()), default=_json_default)
        self._send(200, body.encode("utf-8"), "application/json")

    def _saved_snapshot(self, view, name):
        path = saved_snapshot_path(view.snapshot_dir, name)
        try:
            if path is None:  # a refused name, or snapshots are off
                raise FileNotFoundError(name)
            with open(path, "rb") as f:
                body = f.read()
        except OSError:  # also a snapshot that retention just deleted
            self._send(404, b"no such snapshot\n", "text/plain")
            return
        self._send(200, body, "image/jpeg")

    def _healthz(self, view):
        age = view.frame_age()
        healthy = age is not None and age <= HEALTHY_WITHIN_S
        body = json.dumps({"healthy": healthy,
                           "last_frame_age_s": None if age is None else round(age, 3)})
        self._send(200 if healthy else 503, body.encode("utf-8"), "application/json")

    def _snapshot(self, view):
        jpeg = view.get_jpeg()
        if jpeg is None:
            self._send(503, b"no frame yet\n", "text/plain", {"Retry-After": "1"})
        else:
            self._send(200, bytes(jpeg), "image/jpeg")

    def _stream(self, view):
        if not view._acquire_stream():
            self._send(503, b"too many streams\n", "text/plain", {"Retry-After": "5"})
            return
        try:
            self.send_response(200)
            self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + _BOUNDARY)
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            view._stream_parts(self.wfile)
        except OSError as e:  # the viewer closed the page, or stop() closed the socket
            log.debug("stream to %s ended: %s", self.address_string(), e)
        finally:
            view._release_stream()


class WebView(object):
    """The HTTP server, run on its own thread; see the module docstring for the routes.

    Example:
      view = WebView("127.0.0.1", 8080, slot.latest_jpeg, stats.snapshot, stats.last_frame_time)
      view.start()
      ...
      view.stop()
    """

    def __init__(self, host, port, get_jpeg, get_stats, last_frame_time, credentials=None,
                 insecure=False, clock=time.monotonic, max_fps=10.0, max_streams=8, get_events=list,
                 snapshot_dir=None):
        """Args:
          host: address to bind ("127.0.0.1", "0.0.0.0", "::1", ...).
          port: TCP port; 0 picks a free one (see `.port` after start()).
          get_jpeg: callable() -> JPEG bytes of the latest overlaid frame, or None (no frame yet).
            Called from request threads, so it must be thread-safe; returning the same bytes
            object until a new frame exists lets the stream skip unchanged frames.
          get_stats: callable() -> JSON-able dict (numpy scalars allowed); masked before sending.
          last_frame_time: callable() -> `clock()` time the last frame completed, or None.
          credentials: password/token (str) every request must offer, or None.
          insecure: allow a non-loopback bind without credentials.
          clock: monotonic clock in seconds, the one last_frame_time uses.
          max_fps: most frames per second sent to each stream viewer.
          max_streams: most simultaneous /stream.mjpg viewers (each costs a thread + bandwidth).
          get_events: callable() -> list of the recent objects' dicts for /events (thread-safe;
            app.outputs.recordings.recent.RecentEvents.items), `snapshot` relative to `snapshot_dir`.
          snapshot_dir: the snapshots folder /snapshots/ serves, or None (then it answers 404).

        Raises:
          UserError: a non-loopback host without credentials and without insecure.
          ValueError: a bad port, a non-callable provider, empty credentials, max_fps <= 0.
        """
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError("port must be an int in 0..65535, received {!r}".format(port))
        for name, fn in (("get_jpeg", get_jpeg), ("get_stats", get_stats),
                         ("last_frame_time", last_frame_time), ("clock", clock), ("get_events", get_events)):
            if not callable(fn):
                raise ValueError("{} must be callable, received {!r}".format(name, fn))
        if credentials is not None and (not isinstance(credentials, str) or not credentials):
            raise ValueError("credentials must be a non-empty str or None")
        if max_fps <= 0 or max_streams < 1:
            raise ValueError("max_fps must be > 0 and max_streams >= 1, received {} and {}"
                             .format(max_fps, max_streams))
        check_exposure(host, port, credentials, insecure)
        if credentials is None and not is_loopback(host):
            log.warning("web view on %s:%d WITHOUT credentials (--http-insecure)", host, port)
        self.host, self._requested_port = host, port
        self.get_jpeg, self.get_stats, self.last_frame_time = get_jpeg, get_stats, last_frame_time
        self.credentials, self.clock = credentials, clock
        self.get_events, self.snapshot_dir = get_events, snapshot_dir
        self.max_fps, self.max_streams = float(max_fps), int(max_streams)
        self.page = redact(_PAGE).encode("utf-8")
        self._server = self._thread = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections = {}  # socket -> request thread
        self._streams = 0

    @property
    def port(self):
        """The bound port (the real one when 0 was asked for); None before start()."""
        return self._server.server_address[1] if self._server else None

    @property
    def url(self):
        host = "[{}]".format(self.host) if ":" in self.host else self.host
        return "http://{}:{}/".format(host, self.port)

    def start(self):
        """Binds and serves on a background thread.

        Raises:
          UserError: the address cannot be bound (in use, not on this host, no permission).
        """
        if self._server is not None:
            raise RuntimeError("WebView already started")
        try:
            self._server = _Server((self.host, self._requested_port), self)
        except OSError as e:
            raise UserError("http.listen: cannot listen on {}:{} ({}). Pick a free port or an "
                            "address of this host.".format(self.host, self._requested_port,
                                                            e.strerror or e))
        self._stopping.clear()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.1,),
                                        name="edgedet-http")
        self._thread.daemon = True
        self._thread.start()
        log.info("web view on %s", self.url)
        return self

    def stop(self, timeout=1.0):
        """Stops serving, closes every connection (streams included) and joins the threads.

        Returns:
          True when every thread finished within `timeout` seconds.
        """
        if self._server is None:
            return True
        deadline = time.monotonic() + timeout
        self._stopping.set()  # stream loops notice within one frame interval
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            connections = list(self._connections.items())
        for sock, _ in connections:
            try:
                sock.shutdown(socket.SHUT_RDWR)  # unblocks reads/writes stuck on a slow client
            except OSError:
                log.debug("connection already closed")
        threads = [self._thread] + [t for _, t in connections]
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._server = self._thread = None
        alive = [t for t in threads if t.is_alive()]
        if alive:
            log.warning("web view: %d thread(s) still running after %.1f s", len(alive), timeout)
        return not alive

    def frame_age(self):
        """Seconds since the last completed frame, or None when there has been none."""
        last = self.last_frame_time()
        return None if last is None else max(0.0, self.clock() - last)

    # -- bookkeeping used by the server and handler

    def _track(self, sock, thread):
        with self._lock:
            self._connections[sock] = thread

    def _untrack(self, sock):
        with self._lock:
            self._connections.pop(sock, None)

    def _acquire_stream(self):
        with self._lock:
            if self._streams >= self.max_streams:
                return False
            self._streams += 1
            return True

    def _release_stream(self):
        with self._lock:
            self._streams -= 1

    def _stream_parts(self, wfile):
        """Writes JPEG parts until stop(); a new frame at most every 1/max_fps s."""
        last, last_sent = None, 0.0
        while not self._stopping.is_set():
            jpeg = self.get_jpeg()
            now = time.monotonic()
            # Unchanged frames are re-sent once a second so proxies keep the stream open.
            if jpeg is not None and (jpeg is not last or now - last_sent >= 1.0):
                head = "--{}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n".format(
                    _BOUNDARY, len(jpeg))
                wfile.write(head.encode("ascii") + bytes(jpeg) + b"\r\n")
                wfile.flush()
                last, last_sent = jpeg, now
            self._stopping.wait(1.0 / self.max_fps)
