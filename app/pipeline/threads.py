"""The live app's threads: capture (1 per source) -> inference (1 per interpreter) -> output.

    capture i: read + resize/RGB --FrameSlots (latest per source, or blocking for files)--> inference w
    inference w: copy in + invoke --ResultQueue (bounded)--> output: decode/NMS, overlay, sinks, stats

Live sources overwrite their slot, so inference always takes the newest frame and the
drops are counted; files hand off with a blocking put so every frame is processed in
order. The capture thread also prepares each frame for the live model's input
(`InputWriter.prepare`), so the inference thread only copies it in and invokes (the
interpreter releases the GIL) and the interpreter idles as little as possible. It hands each
result on just before the next invoke (at once when no frame waits), so the output thread
decodes while the interpreter runs;
everything else runs on the output thread (decode, the object stage, overlay), which calls
`sink.write(result)` for every sink and marks the frame done (the systemd watchdog and /healthz key off that).

`stop()` only sets the flag and closes the hand-offs, so it is safe from a signal handler
or from a sink on the output thread; `join()` waits for every thread (2 s in total).

A supervisor thread watches for two faults nothing else can see:
- a live source that delivered no frame for `source_timeout_s` gets a `source_lost`
  event (and `source_reconnected` when frames come back); the capture thread itself
  reconnects with backoff when the source reports the loss;
- an invoke running longer than `invoke_timeout_s` is logged, its thread given up on and
  the interpreter rebuilt with `rebuild(index, worker)` on a fresh inference thread; when
  the rebuild fails the pipeline stops with `exit_code` EXIT_INVOKE_HUNG so that systemd
  restarts the service.
`replace_workers()` swaps the live workers between frames (the float fallback).
"""

import collections
import logging
import threading
import time

from app.model import postprocess
from app.tracking.objects import counts as object_counts
from app.redact import redact
from app.pipeline.slots import Closed, FrameSlots, ResultQueue
from app.capture.sources import SourceLost

log = logging.getLogger(__name__)

# Worker = one interpreter with its input writer, output reader and decoder.
Worker = collections.namedtuple("Worker", "interpreter writer reader decoder model")
# What capture hands to inference. `index` counts the source's frames from 1. `prepared` is
# (writer layout, input array) from InputWriter.prepare, `prepare_s` the seconds it took.
FrameJob = collections.namedtuple("FrameJob", "source index name image time prepared prepare_s")
# What the output stage gives every sink. boxes: float32 [K, 4] pixels (x0, y0, x1, y1);
# detections: app.model.postprocess.Detections (normalized ymin, xmin, ymax, xmax); raw: the
# source frame, BGR, untouched (for checkers); image: a copy with the overlay drawn when a
# sink wants pictures, else the raw frame itself.
# objects: app.tracking.objects.ObjectFrame when the object stage runs for this source, else None.
FrameResult = collections.namedtuple(
    "FrameResult", "source frame name time raw image detections boxes labels model timings objects",
    defaults=(None,))

RESULT_QUEUE_SIZE = 4
POLL_S = 0.1
JOIN_S = 2.0
RECONNECT_BACKOFF_S = (0.5, 8.0)
SUPERVISE_S = 0.25
# Process exit code when a hung interpreter could not be rebuilt (systemd restarts us).
EXIT_INVOKE_HUNG = 4


class Pipeline(object):
    """Runs sources through workers into sinks until stopped or out of frames.

    Args:
      sources: opened sources (app.capture.sources), each with name, live, read(), reopen(), close().
      workers: list of Worker; one inference thread each, all sharing all sources.
      labels: dict {class_id: name}.
      sinks: objects with write(FrameResult) and optionally status(dict), close(),
        and a truthy `wants_image` (read per frame) if they show the picture.
      stats: app.pipeline.stats.Stats.
      max_frames: stop after this many processed frames (all sources); 0 = no limit.
      hud: callable(Stats) -> heads-up text drawn on the frame, or None.
      draw: callable(image, FrameResult, hud_text) drawing the overlay in place, or None.
      source_timeout_s: seconds without a frame before a live source counts as lost (0 = off).
      invoke_timeout_s: seconds an invoke may run before it counts as hung (0 = off).
      rebuild: callable(index, Worker) -> new Worker for a hung interpreter; raising means
        the interpreter cannot be rebuilt. None: a hung invoke stops the pipeline.
      objects: app.tracking.objects.ObjectStages run on every result before the overlay, or None. Its
        events go to every sink with `object_events(list of dict)`, and the `end` events of
        the objects still live when the pipeline stops, in join().
    """

    def __init__(self, sources, workers, labels, sinks, stats, max_frames=0, hud=None, draw=None,
                 source_timeout_s=0.0, invoke_timeout_s=0.0, rebuild=None, objects=None):
        if not sources or not workers:
            raise ValueError("need at least one source and one worker, got {} and {}"
                             .format(len(sources), len(workers)))
        if source_timeout_s < 0 or invoke_timeout_s < 0:
            raise ValueError("timeouts must be >= 0 s, got source {} and invoke {}"
                             .format(source_timeout_s, invoke_timeout_s))
        self.sources, self.labels = list(sources), labels
        self.sinks, self.stats, self.max_frames = list(sinks), stats, int(max_frames)
        self._hud, self._draw = hud, draw
        self._source_timeout, self._invoke_timeout = float(source_timeout_s), float(invoke_timeout_s)
        self._rebuild = rebuild
        self._objects = objects
        self._slots = FrameSlots()
        self._results = ResultQueue(RESULT_QUEUE_SIZE)
        self._running = threading.Event()
        self._lock = threading.Lock()
        self._active = list(workers)          # worker i is served by inference thread i
        self._generation = [0] * len(workers)  # bumped when thread i is given up on
        self._invoking = {}                     # i -> (generation, start) while invoke runs
        self._captures_left = len(self.sources)
        self._workers_left = 0
        self._last_capture = [0.0] * len(self.sources)
        self._lost = [False] * len(self.sources)
        self._threads = []
        self._output_thread = None
        self.processed = 0
        self.exit_code = 0
        for source in self.sources:
            stats.add_source(source.name)

    @property
    def workers(self):
        """The live workers (a copy of the list)."""
        with self._lock:
            return list(self._active)

    # ------------------------------------------------------------------ control

    @property
    def running(self):
        return self._running.is_set()

    def start(self):
        """Starts every thread and sends the "started" status event."""
        self._running.set()
        self.status("started", sources=[s.name for s in self.sources], model=self.workers[0].model,
                    runtime=self.stats.runtime)
        now = time.monotonic()
        self._last_capture = [now] * len(self.sources)
        for i in range(len(self.sources)):
            self._spawn(self._capture, "capture-{}".format(i), i)
        for i in range(len(self._active)):
            self._spawn_inference(i, 0)
        self._output_thread = self._spawn(self._output, "output")
        if self._source_timeout or self._invoke_timeout:
            self._spawn(self._supervise, "supervisor")

    def _spawn(self, target, name, *args):
        thread = threading.Thread(target=target, name=name, args=args)
        thread.daemon = True  # a camera read that never returns must not keep the process alive
        thread.start()
        self._threads.append(thread)
        return thread

    def _spawn_inference(self, i, generation):
        with self._lock:
            self._workers_left += 1
        self._spawn(self._infer, "inference-{}.{}".format(i, generation), i, generation)

    def replace_workers(self, workers):
        """Makes `workers` the live workers; each inference thread switches between two frames.

        Threads beyond the new count finish; new ones start for extra workers. Safe from any
        thread, before or after start().
        """
        if not workers:
            raise ValueError("need at least one worker, got none")
        with self._lock:
            old = len(self._active)
            self._active = list(workers)
            self._generation.extend([0] * max(0, len(workers) - len(self._generation)))
        self.stats.model = workers[0].model
        if self.running:
            for i in range(old, len(workers)):
                self._spawn_inference(i, self._generation[i])

    def stop(self):
        """Asks every thread to finish; safe from signal handlers and sinks."""
        self._running.clear()
        self._slots.close()
        self._results.close()
        for source in self.sources:
            interrupt = getattr(source, "interrupt", None)
            if interrupt is not None:
                interrupt()  # a paced read waiting for its next frame time returns now

    def fail(self, code, reason):
        """Stops with a non-zero exit code (first failure wins)."""
        if not self.exit_code:
            self.exit_code = int(code)
        self.status("fatal", reason=reason, exit_code=self.exit_code)
        self.stop()

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
        for thread in list(self._threads):
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        alive = [t.name for t in self._threads if t.is_alive() and t is not threading.current_thread()]
        if alive:
            log.warning("threads still running after %.1f s: %s", timeout, ", ".join(alive))
        if self._objects is not None and not (self._output_thread and self._output_thread.is_alive()):
            self._send_objects(self._objects.finish(time.time()))
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
                frame = self._read(i, source)
                if frame is None:
                    break
                index += 1
                self._last_capture[i] = time.monotonic()
                if self._lost[i]:
                    self._mark_back(i)
                self.stats.count(source.name, "capture")
                job = FrameJob(i, index, frame[1], frame[0], time.time(), *self._prepare(frame[0]))
                if not self._hand_off(i, source, job):
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

    def _prepare(self, image):
        """((layout, input array), seconds) for the live workers' input, made on the capture thread.

        Resizing here overlaps the interpreter's invoke of the previous frame, so the inference
        thread only copies the array in; a worker whose layout differs (after
        replace_workers) prepares the raw frame itself.
        """
        with self._lock:
            writer = self._active[0].writer
        t0 = time.monotonic()
        prepared = writer.prepare(image)
        return (writer.layout, prepared), time.monotonic() - t0

    def _mark_lost(self, i, reason):
        """Reports source i lost once per outage."""
        with self._lock:
            if self._lost[i]:
                return
            self._lost[i] = True
        self.status("source_lost", source=self.sources[i].name, reason=redact(reason))
        log.warning("source lost: %s", redact(reason))

    def _mark_back(self, i):
        with self._lock:
            if not self._lost[i]:
                return
            self._lost[i] = False
        self.status("source_reconnected", source=self.sources[i].name)
        log.info("source reconnected: %s", redact(self.sources[i].name))

    def _read(self, i, source):
        """The next (image, name), None at the end; reconnects a lost live source with backoff."""
        try:
            return source.read()
        except SourceLost as e:
            self._mark_lost(i, str(e))
        delay = RECONNECT_BACKOFF_S[0]
        while self.running:
            if source.reopen():
                try:
                    frame = source.read()
                except SourceLost:
                    frame = None
                if frame is not None:
                    return frame
            end = time.monotonic() + delay
            while self.running and time.monotonic() < end:
                time.sleep(POLL_S)  # short naps so stop() is seen quickly
            delay = min(delay * 2, RECONNECT_BACKOFF_S[1])
        return None

    # ------------------------------------------------------------------ inference

    def _current(self, i, generation):
        """Worker i for the thread of this generation, or None when that thread must finish."""
        with self._lock:
            if self._generation[i] != generation or i >= len(self._active):
                return None
            return self._active[i]

    def _infer(self, i, generation):
        # A frame's result is handed to the output stage just before the NEXT frame's invoke
        # (or at once when no frame is waiting): the output thread, woken by the hand-off, then
        # decodes while the interpreter runs instead of holding the GIL while this thread
        # fetches and copies in the next frame.
        pending = None
        try:
            while True:
                worker = self._current(i, generation)
                if worker is None:
                    break  # retired by replace_workers, or given up on while hung
                got = self._slots.get(timeout=0 if pending is not None else POLL_S)
                if got is None:
                    if pending is not None:
                        self._results.put(pending)
                        pending = None
                        continue
                    with self._lock:
                        finished = self._captures_left == 0
                    if finished and self._slots.pending() == 0:
                        break
                    continue
                job = got[1]
                t0 = time.monotonic()
                if worker.writer.write_prepared(job.prepared, job.image):
                    t0 -= job.prepare_s  # the resize ran on the capture thread; count it here
                t1 = time.monotonic()
                if pending is not None:
                    self._results.put(pending)
                    pending = None
                started = time.monotonic()
                self._invoking[i] = (generation, started)
                worker.interpreter.invoke()
                self._invoking.pop(i, None)
                t2 = time.monotonic()
                if self._generation[i] != generation:
                    return  # the supervisor gave up on this invoke; its replacement owns slot i
                raw = worker.reader.read()
                invoke_s = t2 - started
                self.stats.stage("preprocess", t1 - t0)
                self.stats.stage("invoke", invoke_s)
                pending = (job, raw, worker, {"preprocess": t1 - t0, "invoke": invoke_s})
            if pending is not None:
                self._results.put(pending)
        except Closed:
            pass
        finally:
            with self._lock:
                if self._generation[i] == generation:
                    self._workers_left -= 1  # a given-up thread was already subtracted

    # ------------------------------------------------------------------ supervision

    def _supervise(self):
        while self.running:
            now = time.monotonic()
            if self._invoke_timeout:
                for i, (generation, started) in list(self._invoking.items()):
                    if now - started > self._invoke_timeout and self._generation[i] == generation:
                        self._recover(i, generation, now - started)
            if self._source_timeout:
                for i, source in enumerate(self.sources):
                    idle = now - self._last_capture[i]
                    if source.live and not self._lost[i] and idle > self._source_timeout:
                        self._mark_lost(i, "{}: no frame for {:.1f} s".format(source.name, idle))
            time.sleep(SUPERVISE_S)

    def _recover(self, i, generation, stuck_s):
        """Gives up on a hung invoke of worker i and rebuilds its interpreter on a new thread."""
        with self._lock:
            self._generation[i] = generation + 1
            self._workers_left -= 1  # the hung thread no longer counts
            old = self._active[i] if i < len(self._active) else None
        self._invoking.pop(i, None)
        log.error("invoke on interpreter %d stuck for %.1f s (> %.1f s); rebuilding the interpreter",
                  i, stuck_s, self._invoke_timeout)
        self.status("invoke_timeout", worker=i, stuck_s=round(stuck_s, 2), model=getattr(old, "model", ""))
        if self._rebuild is None or old is None:
            self.fail(EXIT_INVOKE_HUNG, "invoke hung and no way to rebuild the interpreter")
            return
        try:
            new = self._rebuild(i, old)
        except Exception as e:  # any failure to rebuild means: exit and let systemd restart us
            log.error("rebuilding interpreter %d failed: %s: %s; exiting with code %d so the service "
                      "manager restarts edgedet", i, type(e).__name__, e, EXIT_INVOKE_HUNG)
            self.fail(EXIT_INVOKE_HUNG, "interpreter rebuild failed: {}: {}".format(type(e).__name__, e))
            return
        with self._lock:
            if i < len(self._active):
                self._active[i] = new
        self.status("interpreter_rebuilt", worker=i, model=new.model)
        if self.running:
            self._spawn_inference(i, generation + 1)

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

    def _wants_image(self):
        return self._draw is not None and any(getattr(s, "wants_image", False) for s in self.sinks)

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
        if self._objects is not None:
            result = result._replace(objects=self._objects.update(result))
            if result.objects is not None:
                self.stats.set_objects(source.name, object_counts(result.objects.objects))
        t_objects = time.monotonic()
        if self._wants_image():
            result = result._replace(image=job.image.copy())
            self._draw(result.image, result, self._hud(self.stats) if self._hud else "")
        t2 = time.monotonic()
        for sink in self.sinks:
            sink.write(result)
        if result.objects is not None:
            self._send_objects(result.objects.events)
        t3 = time.monotonic()
        self.processed += 1
        self.stats.count(source.name, "processed")
        self.stats.stage("decode", t1 - t0)
        self.stats.stage("objects", t_objects - t1)
        self.stats.stage("overlay", t2 - t_objects)
        self.stats.stage("sinks", t3 - t2)
        self.stats.stage("latency", time.time() - job.time)  # capture -> sinks done, queues included
        self.stats.frame_done()

    def _send_objects(self, events):
        """Object events to every sink that takes them."""
        if not events:
            return
        for sink in self.sinks:
            take = getattr(sink, "object_events", None)
            if take is not None:
                take(events)
