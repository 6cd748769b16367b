"""The background thread that writes snapshots and clips, off the live path.

The output thread only queues jobs (`submit`, never blocking: a full queue drops the job and
counts it). The thread runs each job, and between jobs an `idle` call (retention). A job that
fails with OSError (full disk, folder removed, permissions) is logged through `FaultLog`, once
per kind and then at most every `every_s` seconds with the count, and skipped.
"""

import logging
import queue
import threading
import time

log = logging.getLogger(__name__)

QUEUE_SIZE = 64
POLL_S = 0.25


class FaultLog(object):
    """Rate-limited warnings: the first fault of a kind at once, then one line per `every_s`.

    Args:
      every_s: least seconds between two warnings of one kind.
      clock: monotonic seconds.
    """

    def __init__(self, every_s=60.0, clock=time.monotonic):
        self._every, self._clock = float(every_s), clock
        self._last, self._quiet = {}, {}
        self.counts = {}

    def fault(self, kind, message):
        """Counts a fault of `kind`; logs `message` unless one of this kind was logged recently."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = self._clock()
        last = self._last.get(kind)
        if last is not None and now - last < self._every:
            self._quiet[kind] = self._quiet.get(kind, 0) + 1
            return
        more = self._quiet.pop(kind, 0)
        self._last[kind] = now
        log.warning("%s%s", message, " ({} more since the last warning)".format(more) if more else "")


class BackgroundWriter(object):
    """A daemon thread running queued jobs in order.

    Args:
      name: the thread's name.
      run_job: callable(job) run on the thread; OSError is logged (kind: the job's `kind`
        attribute, else "write") and skipped; any other exception is logged with its traceback.
      idle: callable() run on the thread after each job and every POLL_S seconds, or None.
      faults: FaultLog shared with the owner.
    """

    def __init__(self, name, run_job, idle=None, faults=None, size=QUEUE_SIZE):
        self._run_job, self._idle = run_job, idle
        self.faults = faults or FaultLog()
        self._queue = queue.Queue(size)
        self._stopping = threading.Event()
        self.dropped = 0
        self._thread = threading.Thread(target=self._loop, name=name)
        self._thread.daemon = True
        self._thread.start()

    def submit(self, job):
        """Queues `job` without blocking; returns False (and counts a drop) when the queue is full."""
        try:
            self._queue.put_nowait(job)
            return True
        except queue.Full:
            self.dropped += 1
            self.faults.fault("queue", "{}: writer busy, {} job(s) dropped".format(self._thread.name, self.dropped))
            return False

    def flush(self, timeout=5.0):
        """Waits until every queued job ran; returns False on timeout."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.005)
        return not self._queue.unfinished_tasks

    def close(self, timeout=5.0):
        """Runs the jobs already queued, then stops the thread (joined within `timeout` seconds)."""
        self._stopping.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("%s still writing after %.1f s", self._thread.name, timeout)

    def _loop(self):
        while True:
            try:
                job = self._queue.get(timeout=POLL_S)
            except queue.Empty:
                if self._stopping.is_set():
                    return
                job = None
            if job is not None:
                self._guarded(getattr(job, "kind", "write"), self._run_job, job)
                self._queue.task_done()
            if self._idle is not None:
                self._guarded("retention", self._idle)

    def _guarded(self, kind, fn, *args):
        try:
            fn(*args)
        except OSError as e:
            self.faults.fault(kind, "{}: {} failed, skipped: {}".format(self._thread.name, kind, e))
        except Exception:  # a bug: keep writing the other jobs, but say where it was
            log.exception("%s: %s job failed", self._thread.name, kind)
