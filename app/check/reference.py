"""The float-reference self-check: is the live model still seeing what its float twin sees?

The user's uint8 model returned garbage while the float model was perfect, and nothing
noticed. Here the bundle's `model_float.tflite` runs on the CPU beside the live model
(Edge TPU, int8 or float) and the two are compared with `app.check.agreement` (matched
detections, IoU >= 0.5 and same class, over all detections; 1.0 when both are empty).

Two checks:
- start-up: `startup_check` runs both models on the bundle's sample images and pools
  the agreement over all of them. One pooled check already covers several frames, so
  `ReferenceChecker.run_startup` acts on it at once (no patience).
- while running: `ReferenceChecker` samples at most one frame per `interval_s` and checks
  it on its own thread, off the live path. The float interpreter has ONE thread (a
  per-thread nice is not possible from Python, so the cost is bounded by sampling rarely
  and by one core's worth of work); the live threads never wait for it.

How the pipeline uses it (the integration contract):

    ref_engine, ref_worker = reference.open_float_worker(bundle, thresholds, num_threads=1)
    checker = reference.ReferenceChecker(
        ref_worker, emit=pipeline.status, cause=reference.cause_for(bundle, live_engine, live_key),
        interval_s=cfg.interval_s, min_agreement=cfg.min_agreement, patience=cfg.patience,
        on_mismatch=cfg.on_mismatch, on_fallback=switch_to_float, on_exit=request_exit_1,
        live_model=live_key)
    checker.run_startup(live_worker, reference.load_samples(bundle))   # before pipeline.start()
    checker.start()
    ...on the output thread, after decode, for every frame:
    checker.offer(job.image, detections, source_name)   # O(1) unless a sample is due
    ...at shutdown: checker.stop(); checker.join()

`emit(event, **fields)` has Pipeline.status's signature. `on_fallback(fields)` must make
the live path use the float model on the CPU (`open_float_worker(bundle, thresholds,
num_threads)` builds it); `on_exit(fields)` must request a non-zero exit. Both are called
from the checker's thread (or from run_startup's caller), once. `live_detections` are
app.model.postprocess.Detections (normalized ymin, xmin, ymax, xmax) from the frame passed with
them; `frame_bgr` is the source frame, uint8 [H, W, 3] BGR, and is copied only when taken.
"""

import collections
import logging
import os
import threading
import time

import numpy as np

from app.check import agreement as agreement_lib
from app.check import diagnosis
from app.inference import live_model, runtime
from app.errors import UserError
from app.model.postprocess import Detections

log = logging.getLogger(__name__)

ACTIONS = ("warn", "fallback", "exit")
MATCH_IOU = 0.5
POLL_S = 0.1

# Pooled result of comparing the live model with the float model over some frames.
# agreement: float in [0, 1]; frames: int; live, reference: total detections; matched: int.
CheckResult = collections.namedtuple("CheckResult", "agreement frames live reference matched")


def load_samples(bundle):
    """The bundle's sample images.

    Args:
      bundle: app.model.bundle.Bundle.

    Returns:
      list of (file name, uint8 [H, W, 3] BGR image), in model.json order.

    Raises:
      UserError: a sample file cannot be decoded.
    """
    import cv2
    samples = []
    for path in bundle.samples:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        if image is None:
            raise UserError("{}: sample image cannot be decoded; restore the bundle's samples/ folder or "
                            "re-export the bundle".format(path))
        samples.append((os.path.basename(path), image))
    return samples


def open_float_worker(bundle, thresholds, num_threads=1):
    """The bundle's float model on the CPU, wired like a live worker.

    Used for the reference (num_threads=1, off the live path) and for the fallback
    (num_threads as the live CPU path is configured).

    Args:
      bundle: app.model.bundle.Bundle or app.model.postprocess_bundle.PostprocessBundle with a "float" model.
      thresholds: decode keyword arguments, the same the live decoder uses.
      num_threads: CPU interpreter threads (0 = auto: all cores but one).

    Returns:
      (app.inference.runtime.Engine, app.pipeline.threads.Worker with model "float").
    """
    if "float" not in bundle.models:
        raise UserError("{}: the bundle has no model_float.tflite, so the live model cannot be checked. "
                        "Re-export it, or set reference.enabled: false".format(bundle.path))
    engine = runtime.make_cpu_engine(bundle.models["float"].file, num_threads)
    if getattr(bundle, "kind", None) == "postprocess":  # app.model.postprocess_bundle: outputs by signature
        return engine, live_model.foreign_worker(engine, thresholds, name="float")
    return engine, live_model.bundle_worker(engine, bundle, "float", thresholds)


def detect(worker, image_bgr):
    """Runs one worker on one frame the way the live path does.

    Args:
      worker: app.pipeline.threads.Worker.
      image_bgr: uint8 [H, W, 3] BGR frame.

    Returns:
      app.model.postprocess.Detections (normalized ymin, xmin, ymax, xmax).
    """
    worker.writer.write(image_bgr)
    worker.interpreter.invoke()
    return worker.decoder.decode(worker.reader.read())


def compare(live_list, reference_list, iou=MATCH_IOU):
    """Pooled agreement of two detectors over the same frames.

    Args:
      live_list, reference_list: equally long lists of Detections, frame by frame.
      iou: IoU threshold for a match.

    Returns:
      CheckResult; agreement = 2 * matched / (live + reference), 1.0 when both are empty.
    """
    if len(live_list) != len(reference_list):
        raise ValueError("expected equally many frames, got {} and {}".format(len(live_list), len(reference_list)))
    matched = sum(agreement_lib.match_count(a, b, iou) for a, b in zip(live_list, reference_list))
    live = sum(len(d.scores) for d in live_list)
    reference = sum(len(d.scores) for d in reference_list)
    value = 1.0 if live + reference == 0 else 2.0 * matched / (live + reference)
    return CheckResult(value, len(live_list), live, reference, matched)


def startup_check(live_worker, reference_worker, images, iou=MATCH_IOU):
    """Runs both models on every image and compares them.

    Args:
      live_worker, reference_worker: app.pipeline.threads.Worker.
      images: list of uint8 [H, W, 3] BGR images (the bundle's samples).
      iou: IoU threshold for a match.

    Returns:
      CheckResult over all images.
    """
    if not images:
        raise ValueError("expected at least one image, got none")
    live = [detect(live_worker, image) for image in images]
    reference = [detect(reference_worker, image) for image in images]
    return compare(live, reference, iou)


def cause_for(bundle, live_engine, live_key):
    """The log-ready likely cause of a mismatch for this bundle's live model (see app.check.diagnosis).

    Args:
      bundle: app.model.bundle.Bundle.
      live_engine: app.inference.runtime.Engine of the live model.
      live_key: "edgetpu" | "int8" | "float".
    """
    recorded = bundle.models["int8"].input_quantization if "int8" in bundle.models else None
    images = os.path.dirname(bundle.samples[0]) if bundle.samples else bundle.path
    float_path = bundle.models["float"].file if "float" in bundle.models else "model_float.tflite"
    return diagnosis.describe_cause(live_engine.interpreter, bundle.float_range, live_key, float_path,
                                    live_engine.model_path, images, recorded)


def copy_detections(detections):
    """A private copy of a Detections whose arrays the caller may reuse."""
    return Detections(*[np.array(a, copy=True) for a in detections])



class ReferenceChecker(object):
    """Compares sampled live frames with the float model on a background thread and acts on low agreement.

    Args:
      reference_worker: app.pipeline.threads.Worker of the float model (open_float_worker, num_threads=1).
      emit: callable(event, **fields) sending a status event (Pipeline.status's signature).
      cause: the likely-cause sentence (cause_for) logged and sent with every low check.
      interval_s: at most one sampled frame per this many seconds (> 0).
      min_agreement: agreement below this counts as a low check, 0..1.
      patience: consecutive low periodic checks before on_mismatch fires (>= 1).
      on_mismatch: "warn" | "fallback" | "exit".
      on_fallback: callable(fields) switching the live path to the float model on the CPU.
      on_exit: callable(fields) requesting a non-zero exit.
      live_model: "edgetpu" | "int8" | "float", for events; a float live model is never checked.
      clock: monotonic seconds; injectable for tests.
    """

    def __init__(self, reference_worker, emit, cause, interval_s=10.0, min_agreement=0.6, patience=3,
                 on_mismatch="fallback", on_fallback=None, on_exit=None, live_model="int8",
                 clock=time.monotonic):
        _check_settings(interval_s, min_agreement, patience, on_mismatch, on_fallback, on_exit)
        self._worker, self._emit, self.cause = reference_worker, emit, cause
        self._interval, self._min, self._patience = float(interval_s), float(min_agreement), int(patience)
        self._action, self._on_fallback, self._on_exit = on_mismatch, on_fallback, on_exit
        self.live_model, self._clock = live_model, clock
        self._cond = threading.Condition()
        self._pending = None
        self._busy = False
        self._running = False
        self._thread = None
        # Plain attributes read without the lock by offer(): a stale read only delays a sample.
        self.active = live_model != "float"
        self._next_due = clock() + self._interval
        self.low_streak = 0
        self.checks = 0
        self.last_agreement = None
        self.fired = None  # the action taken, once it fired

    # ------------------------------------------------------------------ the live side

    def offer(self, frame_bgr, live_detections, source):
        """Hands a frame and its live detections over if a sample is due; O(1) when not.

        Args:
          frame_bgr: uint8 [H, W, 3] BGR source frame (copied only when taken).
          live_detections: app.model.postprocess.Detections of the live model on this frame.
          source: source name for the event.

        Returns:
          True when the frame was taken for a check.
        """
        if not self.active or self._pending is not None or self._clock() < self._next_due:
            return False
        with self._cond:
            now = self._clock()
            if self._pending is not None or now < self._next_due:
                return False
            self._next_due = now + self._interval
            self._pending = (np.array(frame_bgr, copy=True), copy_detections(live_detections), source)
            self._cond.notify()
        return True

    # ------------------------------------------------------------------ checks

    def run_startup(self, live_worker, samples):
        """The start-up check on the bundle's samples; acts at once when agreement is low.

        Args:
          live_worker: app.pipeline.threads.Worker of the live model.
          samples: list of (name, uint8 [H, W, 3] BGR) from load_samples.

        Returns:
          CheckResult, or None when there are no samples or the live model is the float model.
        """
        if not self.active:
            return None
        if not samples:
            log.warning("reference check at start skipped: the bundle has no sample images")
            self._emit("reference_check", source="samples", agreement=None, skipped="no sample images")
            return None
        result = startup_check(live_worker, self._worker, [image for _, image in samples])
        low = self._report(result, "samples")
        if low:
            self._act(result.agreement, "samples")
        return result

    def check(self, frame_bgr, live_detections, source):
        """One periodic check (what the thread runs): float model, agreement, event, patience.

        Returns:
          CheckResult for this frame.
        """
        result = compare([live_detections], [detect(self._worker, frame_bgr)])
        if self._report(result, source):
            self.low_streak += 1
            if self.low_streak >= self._patience:
                self._act(result.agreement, source)
        else:
            self.low_streak = 0
        return result

    def _report(self, result, source):
        """Emits the reference_check event and its log line; True when the agreement is low."""
        self.checks += 1
        self.last_agreement = result.agreement
        low = result.agreement < self._min
        fields = dict(source=source, agreement=round(result.agreement, 4), frames=result.frames,
                      live_detections=result.live, reference_detections=result.reference,
                      matched=result.matched, min_agreement=self._min, model=self.live_model,
                      low_streak=self.low_streak + 1 if low else 0, patience=self._patience)
        if low:
            fields["cause"] = self.cause
            log.warning("reference check (%s): agreement %.3f < %.3f between the %s model and the float model "
                        "(%d vs %d detections, %d matched). Likely cause: %s", source, result.agreement,
                        self._min, self.live_model, result.live, result.reference, result.matched, self.cause)
        else:
            log.info("reference check (%s): agreement %.3f with the float model (%d vs %d detections)",
                     source, result.agreement, result.live, result.reference)
        self._emit("reference_check", **fields)
        return low

    def _act(self, value, source):
        """Applies on_mismatch; fallback and exit fire once and end the checking."""
        fields = dict(source=source, agreement=round(value, 4), min_agreement=self._min,
                      model=self.live_model, action=self._action, cause=self.cause)
        self.low_streak = 0
        if self._action == "warn":
            log.warning("the %s model disagrees with the float model (agreement %.3f); on_mismatch is warn, "
                        "so it stays live. Likely cause: %s", self.live_model, value, self.cause)
            self._emit("reference_mismatch", **fields)
            return
        self.active = False
        self.fired = self._action
        if self._action == "fallback":
            log.warning("falling back to the float model on the CPU: the %s model disagrees with it (agreement "
                        "%.3f). Likely cause: %s", self.live_model, value, self.cause)
            self._emit("fallback", to="float", **fields)
            self._on_fallback(fields)
        else:
            log.error("exiting: the %s model disagrees with the float model (agreement %.3f). Likely cause: %s",
                      self.live_model, value, self.cause)
            self._emit("reference_mismatch", **fields)
            self._on_exit(fields)

    # ------------------------------------------------------------------ the thread

    def start(self):
        """Starts the checker thread (a daemon: it never holds the process open)."""
        if self._thread is not None:
            raise RuntimeError("the reference checker was already started")
        self._running = True
        self._thread = threading.Thread(target=self._loop, name="reference-check")
        self._thread.daemon = True
        self._thread.start()

    def stop(self):
        """Asks the thread to finish; safe from any thread."""
        with self._cond:
            self._running = False
            self._cond.notify_all()

    def join(self, timeout=2.0):
        """stop() and wait up to `timeout` s; returns True when the thread ended."""
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def wait_idle(self, timeout):
        """Blocks until no sample is pending or being checked; returns True when idle (for tests, shutdown)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._pending is not None or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, POLL_S))
        return True

    def _loop(self):
        while True:
            with self._cond:
                while self._running and self._pending is None:
                    self._cond.wait(POLL_S)
                if not self._running:
                    return
                frame, detections, source = self._pending
                self._busy = True
            try:
                self.check(frame, detections, source)
            except Exception as e:  # a bug here must not kill the live app; it ends the checking
                log.exception("reference check failed; checking stops")
                self.active = False
                self._emit("reference_error", source=source, error="{}: {}".format(type(e).__name__, e))
            finally:
                with self._cond:
                    self._pending = None
                    self._busy = False
                    self._cond.notify_all()


def _check_settings(interval_s, min_agreement, patience, on_mismatch, on_fallback, on_exit):
    if not interval_s > 0:
        raise UserError("reference.interval_s: expected > 0 seconds, got {!r}".format(interval_s))
    if not 0.0 <= min_agreement <= 1.0:
        raise UserError("reference.min_agreement: expected a number in 0..1, got {!r}".format(min_agreement))
    if int(patience) < 1:
        raise UserError("reference.patience: expected >= 1 consecutive checks, got {!r}".format(patience))
    if on_mismatch not in ACTIONS:
        raise UserError("reference.on_mismatch: expected one of {}, got {!r}".format(" | ".join(ACTIONS),
                                                                                   on_mismatch))
    if on_mismatch == "fallback" and on_fallback is None:
        raise ValueError("on_mismatch is fallback but no on_fallback callback was given")
    if on_mismatch == "exit" and on_exit is None:
        raise ValueError("on_mismatch is exit but no on_exit callback was given")
