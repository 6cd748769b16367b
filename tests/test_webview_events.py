"""The web view's recent objects: /events from a real RecentEvents fed real object events (the real
object stage and snapshot sink), /snapshots/<name> serving only .jpg files inside the folder, and
the same credentials as every other route. Real sockets on 127.0.0.1."""

import json
import os
import urllib.error
import urllib.request

import pytest

from app.config import SnapshotsConfig
from app.outputs.recordings import snapshots
from app.outputs.recordings.recent import RecentEvents
from app.outputs.webview import WebView
from outputs_support import result, stage


def _get(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A WebView (token "tok") over the events of one object whose snapshot was saved."""
    root = tmp_path_factory.mktemp("web")
    folder = root / "snaps"
    sink = snapshots.Snapshots(SnapshotsConfig(enabled=True, dir=str(folder)), "config.yaml")
    recent = RecentEvents(sink.folder, max_items=2)
    objects = stage()
    for i, score in enumerate([0.6, 0.8, 0.7, 0.9, None, None, None]):
        frame = result(objects, i, score, 1000.0 + i)
        sink.write(frame)
        sink.writer.flush()
        for s in (sink, recent):  # the app's order: the snapshot sink first
            s.object_events(frame.objects.events)
    sink.close()
    recent.status({"type": "status", "event": "clip", "source": "cam", "objects": [1],
                   "clip": "/x/cam/cam-999.000.mp4"})
    (root / "secret.jpg").write_bytes(b"not yours")
    os.symlink(str(root / "secret.jpg"), str(folder / "cam" / "link.jpg"))
    (folder / "cam" / ".edgedet-tmp.jpg").write_bytes(b"half")
    view = WebView("127.0.0.1", 0, lambda: None, dict, lambda: None, credentials="tok",
                   get_events=recent.items, snapshot_dir=sink.folder).start()
    yield view, folder
    view.stop()


def test_events_lists_the_object_with_its_snapshot_and_clip(served):
    view, folder = served
    code, body = _get(view.url + "events?token=tok")
    items = json.loads(body.decode())
    assert code == 200 and len(items) == 1
    item = items[0]
    assert item["event"] == "end" and item["id"] == 1 and item["label"] == "square" and item["top_score"] == 0.9
    assert item["snapshot"] == "cam/cam-1000.000-1.jpg" and item["clip"] == "cam-999.000.mp4"
    code, jpeg = _get(view.url + "snapshots/" + item["snapshot"] + "?token=tok")
    assert code == 200 and jpeg == (folder / "cam" / "cam-1000.000-1.jpg").read_bytes()


def test_snapshots_route_cannot_leave_the_folder_and_needs_the_token(served):
    view, _ = served
    assert _get(view.url + "events")[0] == 401
    assert _get(view.url + "snapshots/cam/cam-1000.000-1.jpg")[0] == 401
    for name in ("../secret.jpg", "%2e%2e/secret.jpg", "cam/../../secret.jpg", "cam/link.jpg",
                 "cam/.edgedet-tmp.jpg", "cam/cam-1000.000-1.jpg/", "cam", "/etc/passwd", "cam/nothing.jpg"):
        code, body = _get(view.url + "snapshots/" + name + "?token=tok")
        assert code == 404 and body != b"not yours", name


def test_recent_events_keeps_the_latest_objects():
    recent = RecentEvents(None, max_items=2)
    for i in range(1, 4):
        recent.object_events([{"event": "new", "id": i, "source": "cam", "label": "circle", "score": 0.5,
                               "top_score": 0.5, "current_zones": [], "entered_zones": [], "start_time": i,
                               "end_time": None, "snapshot": None}])
    assert [item["id"] for item in recent.items()] == [3, 2]
