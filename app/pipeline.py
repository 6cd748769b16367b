"""The live app's threads: capture (1 per source) -> inference (1 per interpreter) -> output.

    capture i --FrameSlots (latest per source, or blocking for files)--> inference w
    inference w --ResultQueue (bounded)--> output: decode/NMS, overlay, sinks, stats

Live sources overwrite their slot, so inference always takes the newest frame and the
drops are counted; files hand off with a blocking put so every frame is processed in
order. Inference threads only preprocess and invoke (the interpreter releases the GIL);
everything else runs on the output thread, which calls `sink.write(result)` for every
sink and marks the frame done (the systemd watchdog and /healthz key off that).

`stop()` only sets the flag and closes the hand-offs, so it is safe from a signal handler
or from a sink on the output thread; `join()` waits for every thread (2 s in total).
"""

import collections
import logging
import threading
import time

from app import postprocess
from app.redact import redact
from app.slots import Closed, FrameSlots, ResultQueue
from app.sources import SourceLost

log = logging.getLogger(__name__)

# Worker = one interpreter with its input writer, output reader and decoder.
Worker = collections.namedtuple("Worker", "interpreter writer reader decoder model")
# What capture hands to inference. `index` counts the source's frames from 1.
FrameJob = collections.namedtuple("FrameJob", "source index name image time")
# What the output stage gives every sink. boxes: float32 [K, 4] pixels (x0, y0, x1, y1);
# detections: app.postprocess.Detections (normalized ymin, xmin, ymax, xmax); raw: the
# source frame, BGR, untouched (for checkers); image: a copy with the overlay drawn when a
# sink wants pictures, else the raw frame itself.
FrameResult = collections.namedtuple(
    "FrameResult", "source frame name time raw image detections boxes labels model timings")

RESULT_QUEUE_SIZE = 4
POLL_S = 0.1
JOIN_S = 2.0
RECONNECT_BACKOFF_S = (0.5, 8.0)


class Pipeline(object):
    """Runs sources through workers into sinks until stopped or out of frames.

    Args:
      sources: opened sources (app.sources), each with name, live, read(), reopen(), close().
      workers: list of Worker; their threads share all sources.
      labels: dict {class_id: name}.
      sinks: objects with write(FrameResult) and optionally status(dict), close(),
        and a truthy `wants_image` if they show the picture.
      stats: app.stats.Stats.
      max_frames: stop after this many processed frames (all sources); 0 = no limit.
      hud: callable(Stats) -> heads-up text drawn on the frame, or None.
      draw: callable(image, FrameResult, hud_text) drawing the overlay in place, or None.
    """

    def __init__(self, sources, workers, labels, sinks, stats, max_frames=0, hud=None, draw=None):
        if not sources or not workers:
            raise ValueError("need at least one source and one worker, got {} and {}"
                             .format(len(sources), len(workers)))
        self.sources, self.workers, self.labels = list(sources), list(workers), labels
        self.sinks, self.stats, self.max_frames = list(sinks), stats, int(max_frames)
        self._hud, self._draw = hud, draw
        self._want_image = draw is not None and any(getattr(s, "wants_image", False) for s in self.sinks)
        self._slots = FrameSlots()
        self._results = ResultQueue(RESULT_QUEUE_SIZE)
        self._running = threading.Event()
        self._lock = threading.Lock()
        self._captures_left = len(self.sources)
        self._workers_left = len(self.workers)
        self._threads = []
        self.processed = 0
        for source in self.sources:
            stats.add_source(source.name)

    # ------------------------------------------------------------------ control

    @property
    def running(self):
        return self._running.is_set()

    def start(self):
        """Starts every thread and sends the "started" status event."""
        self._running.set()
        self.status("started", sources=[s.name for s in self.sources], model=self.workers[0].model,
                    runtime=self.stats.runtime)
        for i in range(len(self.sources)):
            self._spawn(self._capture, "capture-{}".format(i), i)
        for i, worker in enumerate(self.workers):
            self._spawn(self._infer, "inference-{}".format(i), worker)
        self._output_thread = self._spawn(self._output, "output")

    def _spawn(self, target, name, *args):
        thread = threading.Thread(target=target, name=name, args=args)
        thread.daemon = True  # a camera read that never returns must not keep the process alive
        thread.start()
        self._threads.append(thread)
        return thread

    def stop(self):
        """Asks every thread to finish; safe from signal handlers and sinks."""
        self._running.clear()
        self._slots.close()
        self._results.close()

    def wait(self):
        """Blocks until the output stage finished (out of frames, max_frames, or stop())."""
        while self._output_thread.is_alive():
            self._output_thread.join(POLL_S)

    def join(self, timeout=JOIN_S):
        """Stops, joins every thread within `timeout` seconds in total, closes sources and sinks.

        Returns:
          Names of threads still alive (empty when all joined).
        """
        self.stop()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive() and t is not threading.current_thread()]
        if alive:
            log.warning("threads still running after %.1f s: %s", timeout, ", ".join(alive))
        self.status("stopped", frames=self.processed)
        for thing in self.sources + self.sinks:
            close = getattr(thing, "close", None)
            if close is not None:
                close()
        return alive

    def run(self):
        """start(), wait(), join(); returns the number of processed frames."""
        self.start()
        try:
            self.wait()
        finally:
            self.join()
        return self.processed

    def status(self, event, **fields):
        """Sends a status event to every sink that takes them."""
        message = collections.OrderedDict([("type", "status"), ("event", event), ("time", time.time())])
        message.update(fields)
        for sink in self.sinks:
            status = getattr(sink, "status", None)
            if status is not None:
                status(message)

    # ------------------------------------------------------------------ capture

    def _capture(self, i):
        source = self.sources[i]
        index = 0
        try:
            while self.running:
                frame = self._read(source)
                if frame is None:
                    break
                index += 1
                self.stats.count(source.name, "capture")
                if not self._hand_off(i, source, FrameJob(i, index, frame[1], frame[0], time.time())):
                    break
        except Closed:
            pass  # stop() closed the slots while we waited: a normal shutdown
        finally:
            with self._lock:
                self._captures_left -= 1

    def _hand_off(self, i, source, job):
        if source.live:
            before = self._slots.drops(i)
            self._slots.put(i, job)
            dropped = self._slots.drops(i) - before
            if dropped:
                self.stats.count(source.name, "dropped", dropped)
            return True
        while self.running:
            if self._slots.put(i, job, block=True, timeout=POLL_S):
                return True
        return False

    def _read(self, source):
        """The next (image, name), None at the end; reconnects a lost live source with backoff."""
        try:
            return source.read()
        except SourceLost as e:
            self.status("source_lost", source=source.name, reason=redact(str(e)))
            log.warning("source lost: %s", redact(str(e)))
        delay = RECONNECT_BACKOFF_S[0]
        while self.running:
            if source.reopen():
                try:
                    frame = source.read()
                except SourceLost:
                    frame = None
                if frame is not None:
                    self.status("source_reconnected", source=source.name)
                    return frame
            end = time.monotonic() + delay
            while self.running and time.monotonic() < end:
                time.sleep(POLL_S)  # short naps so stop() is seen quickly
            delay = min(delay * 2, RECONNECT_BACKOFF_S[1])
        return None

    # ------------------------------------------------------------------ inference

    def _infer(self, worker):
        try:
            while True:
                got = self._slots.get(timeout=POLL_S)
                if got is None:
                    with self._lock:
                        finished = self._captures_left == 0
                    if finished and self._slots.pending() == 0:
                        break
                    continue
                job = got[1]
                t0 = time.monotonic()
                worker.writer.write(job.image)
                t1 = time.monotonic()
                worker.interpreter.invoke()
                t2 = time.monotonic()
                raw = worker.reader.read()
                self.stats.stage("preprocess", t1 - t0)
                self.stats.stage("invoke", t2 - t1)
                self._results.put((job, raw, worker, {"preprocess": t1 - t0, "invoke": t2 - t1}))
        except Closed:
            pass
        finally:
            with self._lock:
                self._workers_left -= 1

    # ------------------------------------------------------------------ output

    def _output(self):
        try:
            while True:
                item = self._results.get(POLL_S)
                if item is None:
                    with self._lock:
                        finished = self._workers_left == 0
                    if finished:
                        break
                    continue
                self._finish(*item)
                if self.max_frames and self.processed >= self.max_frames:
                    break
        except Closed:
            pass
        finally:
            self.stop()

    def _finish(self, job, raw, worker, timings):
        t0 = time.monotonic()
        detections = worker.decoder.decode(raw)
        height, width = job.image.shape[:2]
        boxes = postprocess.to_pixel_boxes(detections.boxes, height, width)
        labels = [self.labels.get(int(c), str(int(c))) for c in detections.class_ids]
        source = self.sources[job.source]
        result = FrameResult(source.name, job.index, job.name, job.time, job.image, job.image, detections,
                             boxes, labels, worker.model, timings)
        t1 = time.monotonic()
        if self._want_image:
            result = result._replace(image=job.image.copy())
            self._draw(result.image, result, self._hud(self.stats) if self._hud else "")
        t2 = time.monotonic()
        for sink in self.sinks:
            sink.write(result)
        t3 = time.monotonic()
        self.processed += 1
        self.stats.count(source.name, "processed")
        self.stats.stage("decode", t1 - t0)
        self.stats.stage("overlay", t2 - t1)
        self.stats.stage("sinks", t3 - t2)
        self.stats.stage("latency", time.time() - job.time)  # capture -> sinks done, queues included
        self.stats.frame_done()
