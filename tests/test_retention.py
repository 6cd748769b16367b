"""app.outputs.recordings.retention: by age, then oldest first down to the size limit, on real files with set times;
temp files of writes in progress are kept, a crash's old ones removed."""

import os

from app.outputs.files import TEMP_PREFIX
from app.outputs.recordings.retention import Retention, expired, saved_files

DAY = 86400.0
NOW = 1.8e9


def _file(folder, name, size, age_s):
    path = os.path.join(str(folder), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(b"x" * size)
    os.utime(path, (NOW - age_s, NOW - age_s))
    return path


def test_age_then_size_oldest_first(tmp_path):
    old = _file(tmp_path, "cam/a.jpg", 100, 11 * DAY)
    b = _file(tmp_path, "cam/b.jpg", 300, 5 * DAY)
    c = _file(tmp_path, "other/c.jpg", 300, 3 * DAY)
    d = _file(tmp_path, "cam/d.jpg", 300, 1 * DAY)
    writing = _file(tmp_path, "cam/" + TEMP_PREFIX + "x.tmp", 5000, 10.0)
    crashed = _file(tmp_path, "cam/" + TEMP_PREFIX + "y.tmp", 10, 2 * 3600.0)
    files = saved_files(str(tmp_path))
    assert [p for _, _, p in files] == [old, b, c, d, crashed, writing]
    # 10 days: a.jpg goes; 700 bytes: of b, c, d (900) the oldest goes too. The temp in progress is
    # neither counted nor deleted.
    assert sorted(expired(files, 10 * DAY, 700, NOW)) == sorted([old, crashed, b])
    assert sorted(expired(files, 0, 0, NOW)) == [crashed]  # no limits: only a crash's leftovers


def test_retention_runs_when_due(tmp_path):
    _file(tmp_path, "cam/a.jpg", 100, 11 * DAY)
    clock = [NOW]
    retention = Retention(str(tmp_path), retain_days=10, max_total_mb=0, every_s=60.0, clock=lambda: clock[0])
    assert retention.maybe_run() == 1 and not os.path.exists(str(tmp_path / "cam" / "a.jpg"))
    _file(tmp_path, "cam/b.jpg", 100, 11 * DAY)
    assert retention.maybe_run() == 0  # not due for 60 s
    clock[0] += 61.0
    assert retention.maybe_run() == 1 and retention.deleted == 2
