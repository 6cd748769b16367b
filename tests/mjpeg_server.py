"""A tiny local MJPEG-over-HTTP camera for fault tests (127.0.0.1 only).

Serves multipart/x-mixed-replace JPEG frames of the synthetic moving scene at `fps` on
any path. `mode` can be switched while it runs:
  "serve": frames flow;
  "stall": open connections stay open but get nothing (a camera that hangs);
  "refuse": new connections are closed at once and open streams end (a camera that is off).
Optional Basic credentials are checked like a real camera does.
"""

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np

BOUNDARY = "camframe"


class MjpegCamera(object):
    def __init__(self, width=160, height=120, fps=15.0, user=None, password=None):
        from app.capture.synthetic import MovingScene
        self.mode = "serve"
        self.frames_sent = 0
        self.connections = 0
        self._scene = MovingScene(width, height, seed=1)
        self._period = 1.0 / fps
        self._auth = None
        if user is not None:
            self._auth = "Basic " + base64.b64encode("{}:{}".format(user, password).encode()).decode()
        camera = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                camera._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,))
        self._thread.daemon = True

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(2.0)

    def _jpeg(self):
        import cv2
        image, _, _ = self._scene.next_frame()
        ok, data = cv2.imencode(".jpg", image)
        assert ok
        return np.asarray(data).tobytes()

    def _serve(self, handler):
        if self.mode == "refuse":
            handler.close_connection = True
            return
        if self._auth is not None and handler.headers.get("Authorization") != self._auth:
            handler.send_response(401)
            handler.send_header("WWW-Authenticate", 'Basic realm="cam"')
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        self.connections += 1
        handler.send_response(200)
        handler.send_header("Content-Type", "multipart/x-mixed-replace; boundary=" + BOUNDARY)
        handler.end_headers()
        try:
            while not self._stop.is_set() and self.mode != "refuse":
                if self.mode == "serve":
                    jpeg = self._jpeg()
                    handler.wfile.write("--{}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n\r\n"
                                        .format(BOUNDARY, len(jpeg)).encode() + jpeg + b"\r\n")
                    handler.wfile.flush()
                    self.frames_sent += 1
                time.sleep(self._period)
        except OSError:
            pass  # the client went away
