"""Live counters of the pipeline, safe to read from any thread (stats file, web view, tests).

Rates are frames per second over a sliding window; stage times are exponential moving
averages in milliseconds. `snapshot()` returns a plain JSON-able dict.
"""

import collections
import threading
import time

# Weight of the newest sample in the moving averages (~20-frame memory).
EMA_ALPHA = 0.05
RATE_WINDOW_S = 5.0


class _Rate(object):
    """Events per second over the last RATE_WINDOW_S seconds."""

    def __init__(self):
        self._times = collections.deque()
        self.total = 0

    def add(self, now, count=1):
        self.total += count
        for _ in range(count):
            self._times.append(now)
        self._trim(now)

    def _trim(self, now):
        while self._times and now - self._times[0] > RATE_WINDOW_S:
            self._times.popleft()

    def per_second(self, now, started):
        self._trim(now)
        span = min(RATE_WINDOW_S, now - started)
        return len(self._times) / span if span > 0 else 0.0


class Stats(object):
    """Pipeline counters. Writers are the pipeline's threads; anyone may call snapshot().

    Args:
      runtime: short description of the runtime ("ai_edge_litert 2.3.0 CPU").
      model: which bundle model runs live ("edgetpu" | "int8" | "float" | file name).
      num_threads: CPU interpreter threads (1 on the Edge TPU).
      clock: monotonic clock in seconds.
    """

    def __init__(self, runtime="", model="", num_threads=0, clock=time.monotonic):
        self._lock = threading.Lock()
        self._clock = clock
        self._started = clock()
        self._sources = collections.OrderedDict()
        self._stages = collections.OrderedDict()
        self._last_frame = None
        self._reference = None
        self._objects = collections.OrderedDict()
        self._outputs = collections.OrderedDict()
        self.runtime, self.model, self.num_threads = runtime, model, num_threads

    def _source(self, name):
        if name not in self._sources:
            self._sources[name] = {"capture": _Rate(), "processed": _Rate(), "dropped": _Rate()}
        return self._sources[name]

    def add_source(self, name):
        with self._lock:
            self._source(name)

    def count(self, source, kind, n=1):
        """Counts `n` frames of `kind` ("capture" | "processed" | "dropped") for `source`."""
        with self._lock:
            self._source(source)[kind].add(self._clock(), n)

    def stage(self, name, seconds):
        """Adds one timing sample of a stage ("preprocess", "invoke", "decode", ...)."""
        ms = seconds * 1000.0
        with self._lock:
            old = self._stages.get(name)
            self._stages[name] = ms if old is None else old + EMA_ALPHA * (ms - old)

    def frame_done(self):
        """A frame went all the way through (the watchdog and /healthz look at this)."""
        with self._lock:
            self._last_frame = self._clock()

    def set_reference(self, **fields):
        """Records the float-reference check's latest state (agreement, checks, action...)."""
        with self._lock:
            self._reference = collections.OrderedDict(sorted(fields.items()))

    def set_objects(self, source, counts):
        """Records a source's object counts now (app.tracking.objects.counts: total, per label, per zone)."""
        with self._lock:
            self._objects[source] = counts

    def set_output(self, name, counters):
        """Records an output's counters now (e.g. "mqtt": connected, published, dropped, ...)."""
        with self._lock:
            self._outputs[name] = dict(counters)

    def last_frame_time(self):
        """clock() time the last frame completed, or None."""
        with self._lock:
            return self._last_frame

    def stage_ms(self, name):
        """Moving-average milliseconds of a stage, or 0.0 before its first sample."""
        with self._lock:
            return self._stages.get(name, 0.0)

    def processed_fps(self):
        """Processed frames per second, all sources together."""
        with self._lock:
            now = self._clock()
            return sum(s["processed"].per_second(now, self._started) for s in self._sources.values())

    def snapshot(self):
        """A JSON-able dict of everything (see the --stats file format in the README)."""
        with self._lock:
            now = self._clock()
            sources = collections.OrderedDict()
            for name, rates in self._sources.items():
                entry = collections.OrderedDict()
                for kind in ("capture", "processed", "dropped"):
                    entry[kind + "_fps"] = round(rates[kind].per_second(now, self._started), 2)
                    entry[kind] = rates[kind].total
                sources[name] = entry
            return collections.OrderedDict([
                ("uptime_s", round(now - self._started, 2)),
                ("runtime", self.runtime),
                ("model", self.model),
                ("num_threads", self.num_threads),
                ("inference_ms", round(self._stages.get("invoke", 0.0), 3)),
                ("stages_ms", collections.OrderedDict((k, round(v, 3)) for k, v in self._stages.items())),
                ("sources", sources),
                ("reference", dict(self._reference) if self._reference is not None else None),
                ("objects", collections.OrderedDict(self._objects)),
                ("outputs", collections.OrderedDict((k, dict(v)) for k, v in self._outputs.items())),
            ])
