"""A ring buffer of encoded frames: the seconds before an event, as JPEG bytes, bounded in bytes.

Clips start `pre_capture_s` before the object's `new` event, so each source keeps its latest
frames, encoded (a 640x480 JPEG at quality 75 is ~30-60 KB against 900 KB raw). The oldest
frames go first when the ring holds more than `seconds` or more than `max_bytes`.
"""

import collections


class EncodedRing(object):
    """(time, JPEG bytes) of one source's latest frames.

    Args:
      seconds: the longest span kept (newest time - oldest time).
      max_bytes: the most JPEG bytes kept.
    """

    def __init__(self, seconds, max_bytes):
        if seconds < 0 or max_bytes <= 0:
            raise ValueError("seconds must be >= 0 and max_bytes > 0, got {} and {}".format(seconds, max_bytes))
        self.seconds, self.max_bytes = float(seconds), int(max_bytes)
        self._frames = collections.deque()
        self.bytes = 0

    def __len__(self):
        return len(self._frames)

    def push(self, time_s, data):
        """Adds one encoded frame (its wall-clock time in seconds), dropping the oldest beyond the bounds."""
        self._frames.append((float(time_s), data))
        self.bytes += len(data)
        while self._frames and (self.bytes > self.max_bytes or time_s - self._frames[0][0] > self.seconds):
            self.bytes -= len(self._frames.popleft()[1])

    def take(self):
        """Every kept (time, bytes), oldest first, and empties the ring."""
        frames = list(self._frames)
        self._frames.clear()
        self.bytes = 0
        return frames
