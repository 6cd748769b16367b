"""Retention of saved files: by age and by the folder's total size, oldest first.

Runs on the writers' background thread (`Retention.maybe_run`), never on the live path. Files
are ordered by modification time; temp files of writes in progress (app.outputs.files.TEMP_PREFIX)
are left alone unless older than STALE_TEMP_S (a crash's leftovers).
"""

import os
import time

from app.outputs.files import TEMP_PREFIX

STALE_TEMP_S = 3600.0


def saved_files(folder):
    """[(mtime, size, path)] of every file under `folder`, oldest first (a vanished file is skipped)."""
    found = []
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            found.append((st.st_mtime, st.st_size, path))
    return sorted(found)


def expired(files, max_age_s, max_bytes, now):
    """The paths to delete: older than `max_age_s`, then the oldest until the rest fit in `max_bytes`.

    Args:
      files: [(mtime, size, path)] oldest first (saved_files).
      max_age_s: seconds; 0 = no age limit.
      max_bytes: bytes; 0 = no size limit.
      now: wall-clock seconds.
    """
    doomed, kept = [], []
    for mtime, size, path in files:
        temp = os.path.basename(path).startswith(TEMP_PREFIX)
        if temp and now - mtime < STALE_TEMP_S:
            continue
        too_old = temp or (max_age_s and now - mtime > max_age_s)
        (doomed if too_old else kept).append((size, path))
    total = sum(size for size, _ in kept)
    for size, path in kept:
        if not max_bytes or total <= max_bytes:
            break
        doomed.append((size, path))
        total -= size
    return [path for _, path in doomed]


class Retention(object):
    """Deletes expired files of one folder at most every `every_s` seconds.

    Args:
      folder: the folder (snapshots.dir or clips.dir).
      retain_days: days a file is kept; 0 = forever.
      max_total_mb: most megabytes (10^6 bytes) the folder keeps; 0 = no limit.
      every_s: seconds between two runs.
      clock: wall-clock seconds (file times are wall-clock).
    """

    def __init__(self, folder, retain_days, max_total_mb, every_s=60.0, clock=time.time):
        self.folder, self._clock, self._every = folder, clock, float(every_s)
        self._max_age, self._max_bytes = 86400.0 * retain_days, int(1e6 * max_total_mb)
        self._next = 0.0
        self.deleted = 0

    def maybe_run(self):
        """Runs when due; returns the number of files deleted (0 when not due or nothing expired)."""
        now = self._clock()
        if now < self._next or not (self._max_age or self._max_bytes):
            return 0
        self._next = now + self._every
        doomed = expired(saved_files(self.folder), self._max_age, self._max_bytes, now)
        for path in doomed:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass  # deleted by someone else meanwhile: the goal is met
        self.deleted += len(doomed)
        return len(doomed)
