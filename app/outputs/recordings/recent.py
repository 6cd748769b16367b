"""The recent objects the web view lists: the last event of each of the latest objects, newest first.

A pipeline sink. It keeps, per object (source, id), its latest object event and the clip that
holds it (from the clips' status events), at most `max_items` objects. The web view reads
`items()` from its request threads; an object's `snapshot` is listed as soon as its file is on
disk (looked up by its deterministic name then, since a long-lived object may send no event
between `new`, whose JPEG is not written yet, and `end`).
"""

import collections
import os
import threading

from app.outputs.recordings.snapshots import snapshot_name

MAX_ITEMS = 50
_FIELDS = ("event", "id", "source", "label", "score", "top_score", "current_zones", "entered_zones",
           "start_time", "end_time")


class RecentEvents(object):
    """Args:
      snapshot_dir: the snapshots folder (paths are listed relative to it), or None when snapshots are off.
      max_items: the most objects kept.
    """

    def __init__(self, snapshot_dir=None, max_items=MAX_ITEMS):
        self.snapshot_dir, self._max = snapshot_dir, int(max_items)
        self._items = collections.OrderedDict()  # (source, id) -> dict, most recently changed last
        self._lock = threading.Lock()

    def write(self, result):
        pass  # only events matter here

    def object_events(self, events):
        with self._lock:
            for event in events:
                key = (event["source"], event["id"])
                item = self._items.pop(key, {"clip": None})
                item.update((k, event[k]) for k in _FIELDS)
                self._items[key] = item
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def status(self, message):
        """A clip event names the clip on each of its objects still listed."""
        if message.get("event") != "clip":
            return
        with self._lock:
            for track_id in message.get("objects", ()):
                item = self._items.get((message["source"], track_id))
                if item is not None:
                    item["clip"] = os.path.basename(message["clip"])

    def items(self):
        """Copies of the listed objects' dicts, newest first; `snapshot` is relative to the snapshots folder."""
        with self._lock:
            items = [dict(item) for item in reversed(self._items.values())]
        for item in items:
            item["snapshot"] = self._saved(item)
        return items

    def _saved(self, item):
        """The object's snapshot name relative to the folder ("/"-separated) if its file exists, else None."""
        if self.snapshot_dir is None:
            return None
        name = snapshot_name(item["source"], item["start_time"], item["id"])
        return name.replace(os.sep, "/") if os.path.exists(os.path.join(self.snapshot_dir, name)) else None
