"""The bounded outbox between the output thread and a network thread (MQTT).

It holds two kinds of message:
- events (`put`): a stream in which every message counts, in order. At `size` messages the OLDEST
  is dropped and counted: the newest events tell what is in view now, which is what a subscriber
  that comes back wants; an old `new` whose `end` is also queued has lost its use.
- state (`set`): retained topics (counts, snapshots) where only the newest value matters. A new
  value replaces the unsent one of its topic (counted as superseded, not as a drop), so state
  costs one message per topic however long the broker is away.
`put` and `set` never block (the output thread calls them); `take` waits (the network thread).
"""

import collections
import threading

# payload: bytes or str, or a callable() -> bytes that the network thread calls (a JPEG encode).
Message = collections.namedtuple("Message", "topic payload retain")


class Outbox(object):
    """Events (drop oldest beyond `size`) and the latest state per topic; thread-safe.

    Args:
      size: most events held; >= 1.
    """

    def __init__(self, size):
        if int(size) < 1:
            raise ValueError("outbox size must be >= 1, got {}".format(size))
        self._size = int(size)
        self._events = collections.deque()
        self._state = collections.OrderedDict()
        self._cond = threading.Condition()
        self.dropped = 0
        self.superseded = 0

    def put(self, topic, payload, retain=False):
        """Queues an event message; drops the oldest when full."""
        with self._cond:
            if len(self._events) >= self._size:
                self._events.popleft()
                self.dropped += 1
            self._events.append(Message(topic, payload, retain))
            self._cond.notify()

    def set(self, topic, payload):
        """Queues the newest retained value of `topic`, replacing one not sent yet."""
        with self._cond:
            if self._state.pop(topic, None) is not None:
                self.superseded += 1
            self._state[topic] = Message(topic, payload, True)
            self._cond.notify()

    def take(self, timeout):
        """The next Message (state before events), or None when none came within `timeout` s."""
        with self._cond:
            if not self._state and not self._events:
                self._cond.wait(timeout)
            if self._state:
                return self._state.popitem(last=False)[1]
            return self._events.popleft() if self._events else None

    def __len__(self):
        with self._cond:
            return len(self._state) + len(self._events)
