"""Hand-offs between the app's threads. Everything is bounded.

`FrameSlots` holds one latest frame per source under one `threading.Condition`
(the examples-camera pattern, widened to many sources). A live source's new frame
overwrites the waiting one and the drop is counted, so a stale frame is never
processed. A file source puts with `block=True` instead and waits for its slot to
empty, so every frame is processed in order. Any number of inference threads `get`
from it; the source served longest ago goes first (ties: the frame that has waited
longest), which shares the interpreters fairly between cameras even when every slot is
always full.

`ResultQueue` is the bounded FIFO from inference to the output stage.
"""

import collections
import queue
import threading


class Closed(Exception):
    """The slot or queue was closed; the thread using it should finish."""


class FrameSlots(object):
    """One latest-item slot per key, shared by producers and consumers."""

    def __init__(self):
        self._cond = threading.Condition()
        self._items = collections.OrderedDict()  # key -> item, oldest put first
        self._drops = collections.Counter()
        self._served = {}  # key -> number of the get() that last took its item
        self._gets = 0
        self._closed = False

    def put(self, key, item, block=False, timeout=None):
        """Stores `item` as the latest for `key`.

        Args:
          key: the source's key.
          item: anything.
          block: False overwrites a waiting item (counted as a drop); True waits until the
            slot is empty, so nothing is dropped.
          timeout: seconds to wait when blocking; None waits until closed.

        Returns:
          True if stored, False if a blocking put timed out.

        Raises:
          Closed: after close().
        """
        with self._cond:
            if block:
                if not self._cond.wait_for(lambda: self._closed or key not in self._items, timeout):
                    return False
            if self._closed:
                raise Closed()
            if key in self._items:
                self._drops[key] += 1
                del self._items[key]
            self._items[key] = item
            self._cond.notify_all()
            return True

    def get(self, timeout=None):
        """Takes the item of the key served longest ago (never served first; ties: the item that
        has waited longest), waiting up to `timeout` seconds.

        Ordering by put time alone is unfair when producers overwrite: a fast camera's frame is
        always new, so it would always wait behind a slower one.

        Returns:
          (key, item), or None on timeout.

        Raises:
          Closed: after close(); items still waiting are dropped.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or self._items, timeout):
                return None
            if self._closed:
                raise Closed()
            key = min(self._items, key=lambda k: self._served.get(k, -1))  # first minimum: oldest put
            item = self._items.pop(key)
            self._gets += 1
            self._served[key] = self._gets
            self._cond.notify_all()  # wake a blocking producer waiting for this slot
            return key, item

    def pending(self):
        """Number of items waiting."""
        with self._cond:
            return len(self._items)

    def drops(self, key):
        """Items of `key` overwritten before anyone took them."""
        with self._cond:
            return self._drops[key]

    def close(self):
        """Wakes every waiter; later put/get raise Closed."""
        with self._cond:
            self._closed = True
            self._items.clear()
            self._cond.notify_all()


class ResultQueue(object):
    """A bounded FIFO whose waiters wake up when it is closed."""

    def __init__(self, maxsize):
        if maxsize < 1:
            raise ValueError("maxsize: expected >= 1, got {}".format(maxsize))
        self._queue = queue.Queue(maxsize)
        self._closed = threading.Event()

    def put(self, item, poll=0.1):
        """Blocks while full (back-pressure on inference); raises Closed after close()."""
        while not self._closed.is_set():
            try:
                self._queue.put(item, timeout=poll)
                return
            except queue.Full:
                continue
        raise Closed()

    def get(self, timeout):
        """Next item, or None after `timeout` seconds; raises Closed after close()."""
        if self._closed.is_set():
            raise Closed()
        try:
            return self._queue.get(timeout=timeout)
        except queue.Empty:
            if self._closed.is_set():
                raise Closed()
            return None

    def close(self):
        self._closed.set()
