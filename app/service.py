"""What turns the live pipeline into a service: systemd notifications, the web view's
frames, and the float-reference guard. Each is a pipeline sink (write(FrameResult)).

- `SystemdNotifier`: READY=1 once warm-up (and the start-up reference check) is done,
  WATCHDOG=1 only when a frame has completed (it is the LAST sink, so "completed" means
  every other sink has it too), paced by `app.sdnotify.Heartbeat`, never from a timer;
  STATUS= lines; STOPPING=1 at shutdown. Without NOTIFY_SOCKET every call is a no-op.
- `FrameFeed`: keeps a reference to the newest FrameResult (O(1) on the output thread)
  and draws + JPEG-encodes it only when the web view asks, at most `max_fps` times a
  second, on the web view's request thread. Nobody watching costs nothing.
- `ReferenceGuard`: wires `app.check.reference.ReferenceChecker` in: offers frames from the
  output stage, sends its events through the pipeline, records the agreement in the
  stats, swaps the live workers to the float model on fallback, and turns on_mismatch
  exit into EXIT_REFERENCE_MISMATCH.
"""

import logging
import threading
import time

from app.check import reference
from app import sdnotify
from app.redact import redact

log = logging.getLogger(__name__)

# Process exit code when reference.on_mismatch is "exit" and the live model disagrees.
EXIT_REFERENCE_MISMATCH = 3


def status_line(stats):
    """One line for `systemctl status`: fps, model, runtime, sources, agreement."""
    snap = stats.snapshot()
    ref = snap.get("reference") or {}
    agreement = ref.get("agreement")
    return "{:.1f} fps | model {} | {} | {} source(s){}".format(
        stats.processed_fps(), snap["model"], snap["runtime"], len(snap["sources"]),
        "" if agreement is None else " | float agreement {:.2f}".format(agreement))


class SystemdNotifier(object):
    """sd_notify as a pipeline sink; put it LAST in the sink list.

    Args:
      stats: app.pipeline.stats.Stats (for the STATUS= line).
      env: environment mapping (os.environ by default; tests pass their own).
    """

    def __init__(self, stats, env=None):
        self._stats, self._env = stats, env
        self._heartbeat = sdnotify.Heartbeat(send=self._ping, env=env)
        self.pings = 0

    def _ping(self):
        # One datagram: the watchdog ping and a fresh status line.
        self.pings += 1
        text = redact(status_line(self._stats)).replace("\n", " ")
        return sdnotify.notify("WATCHDOG=1\nSTATUS=" + text, self._env)

    def ready(self, text):
        """READY=1 with a first STATUS line: start-up is complete."""
        sdnotify.status(text, self._env)
        return sdnotify.ready(self._env)

    def write(self, result):
        self._heartbeat.beat()

    def status(self, message):
        """Status events worth showing in `systemctl status` replace the status line."""
        if message.get("event") in ("fallback", "source_lost", "source_reconnected", "invoke_timeout",
                                    "reference_mismatch", "fatal"):
            fields = " ".join("{}={}".format(k, v) for k, v in message.items()
                              if k not in ("type", "event", "time", "cause"))
            sdnotify.status("{}: {}".format(message["event"], fields), self._env)

    def stopping(self):
        return sdnotify.notify("STOPPING=1", self._env)


class FrameFeed(object):
    """The web view's picture source: the newest frame, overlaid and encoded on demand.

    Args:
      draw: callable(image, FrameResult, hud_text) drawing the overlay in place.
      hud: callable() -> heads-up text.
      max_fps: most JPEG encodes per second (all viewers together).
      quality: JPEG quality 1..100.
      clock: monotonic seconds.
    """

    def __init__(self, draw, hud, max_fps=5.0, quality=80, clock=time.monotonic):
        if max_fps <= 0 or not 1 <= quality <= 100:
            raise ValueError("max_fps must be > 0 and quality in 1..100, got {} and {}".format(max_fps, quality))
        self._draw, self._hud = draw, hud
        self._period, self._quality, self._clock = 1.0 / max_fps, int(quality), clock
        self._lock = threading.Lock()
        self._latest = None
        self._encoded_for = None
        self._jpeg = None
        self._encoded_at = None
        self.encodes = 0

    def write(self, result):
        self._latest = result  # a reference swap: the output thread does no picture work here

    def get_jpeg(self):
        """JPEG bytes of the newest frame with the overlay, or None before the first frame.

        Returns the same bytes object until a new encode happens (the stream skips repeats).
        """
        import cv2
        with self._lock:
            result = self._latest
            now = self._clock()
            fresh = self._encoded_at is not None and now - self._encoded_at < self._period
            if result is None or result is self._encoded_for or fresh:
                return self._jpeg
            image = result.image
            if image is result.raw:  # nobody drew on this frame: draw on our own copy
                image = result.raw.copy()
                self._draw(image, result, self._hud())
            ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self._quality])
            if not ok:
                log.warning("JPEG encoding of frame %s failed", result.frame)
                return self._jpeg
            self._jpeg, self._encoded_for, self._encoded_at = data.tobytes(), result, now
            self.encodes += 1
            return self._jpeg


class ReferenceGuard(object):
    """The float-reference check as a pipeline sink (see app.check.reference for the checks).

    Args:
      bundle: app.model.bundle.Bundle with model_float.tflite.
      thresholds: the live decoder's decode_ssd keyword arguments.
      live_engine: app.inference.runtime.Engine of the live model (for naming the likely cause).
      live_key: "edgetpu" | "int8" (a float live model is not checked).
      settings: app.config.ReferenceConfig.
      fallback_threads: CPU threads of the float model after a fallback (0 = auto: all cores but one).
      stats: app.pipeline.stats.Stats; gets the latest agreement, the check count and the action.
    """

    def __init__(self, bundle, thresholds, live_engine, live_key, settings, fallback_threads, stats):
        self._bundle, self._thresholds = bundle, thresholds
        self._fallback_threads, self._stats = fallback_threads, stats
        self.pipeline = None
        self.exit_requested = False
        _, worker = reference.open_float_worker(bundle, thresholds, num_threads=1)
        self.checker = reference.ReferenceChecker(
            worker, self._emit, reference.cause_for(bundle, live_engine, live_key),
            interval_s=settings.interval_s, min_agreement=settings.min_agreement, patience=settings.patience,
            on_mismatch=settings.on_mismatch, on_fallback=self._fallback, on_exit=self._exit,
            live_model=live_key)
        stats.set_reference(agreement=None, checks=0, action=None, live_model=live_key)

    def attach(self, pipeline):
        self.pipeline = pipeline

    def write(self, result):
        self.checker.offer(result.raw, result.detections, result.name)

    def run_startup(self, live_worker):
        """The start-up check on the bundle's samples (may fall back or request exit at once)."""
        return self.checker.run_startup(live_worker, reference.load_samples(self._bundle))

    def start(self):
        self.checker.start()

    def join(self, timeout=1.0):
        return self.checker.join(timeout)

    def _emit(self, event, **fields):
        if event == "reference_check" and fields.get("agreement") is not None:
            self._stats.set_reference(agreement=fields["agreement"], checks=self.checker.checks,
                                      action=self.checker.fired, live_model=self.checker.live_model,
                                      low_streak=fields.get("low_streak", 0))
        self.pipeline.status(event, **fields)

    def _fallback(self, fields):
        _, worker = reference.open_float_worker(self._bundle, self._thresholds, self._fallback_threads)
        self.pipeline.replace_workers([worker])
        self._stats.runtime = self._stats.runtime.replace("Edge TPU", "CPU") + " (float fallback)"
        self._stats.set_reference(agreement=fields["agreement"], checks=self.checker.checks, action="fallback",
                                  live_model="float")

    def _exit(self, fields):
        self.exit_requested = True
        self._stats.set_reference(agreement=fields["agreement"], checks=self.checker.checks, action="exit",
                                  live_model=self.checker.live_model)
        if self.pipeline.running:
            self.pipeline.fail(EXIT_REFERENCE_MISMATCH, "the live model disagrees with the float model")
