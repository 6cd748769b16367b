"""app.tracking.objects: the object events of hand-made tracks (new, rate-limited update, end), zones with
inertia and loitering, filters before tracking, bad settings. (The live app writing them to
--events is in test_app_cli.)"""

import numpy as np
import pytest

from app.config import FilterConfig, ObjectsConfig, SourceObjectsConfig, ZoneConfig
from app.errors import UserError
from app.tracking.objects import SourceObjects, _rounded, check_settings

LABELS = ["circle", "square", "triangle"]
SETTINGS = ObjectsConfig(min_hits=2, max_age=2, update_interval_s=1.0)
# The lower half of a 200 x 100 frame.
LOWER = ZoneConfig(points=[[0, 50], [200, 50], [200, 100], [0, 100]], inertia=2)


def _stage(**source):
    return SourceObjects("cam", LABELS, SETTINGS, SourceObjectsConfig(**source), "objects.sources.cam")


def _box(bottom, x=20.0):
    return np.array([[x, bottom - 20.0, x + 20.0, bottom]], np.float32)


def _frames(stage, bottoms, labels=None, scores=None, dt=0.25):
    """Runs one object through the stage; returns the events of each frame."""
    out = []
    for i, bottom in enumerate(bottoms):
        if bottom is None:
            frame = stage.update(np.zeros((0, 4), np.float32), [], [], i * dt, 200, 100)
        else:
            frame = stage.update(_box(bottom), [labels[i] if labels else 0],
                                 np.array([scores[i] if scores else 0.8], np.float32), i * dt, 200, 100)
        out.append(frame.events)
    return out


def test_new_then_zone_update_then_end():
    stage = _stage(zones={"lower": LOWER})
    # Bottom edge at y 30, 40 (out), then 60, 70, 80 (in: inertia 2 puts it in the zone at 70), gone.
    events = _frames(stage, [30, 40, 60, 70, 80, 90, None, None, None, None])
    kinds = [[e["event"] for e in frame] for frame in events]
    assert kinds == [[], ["new"], [], [], [], ["update"], [], [], ["end"], []]
    new, update, end = events[1][0], events[5][0], events[8][0]
    assert new == dict(new, type="object", id=1, source="cam", label="circle", score=0.8, top_score=0.8,
                       box=[20.0, 20.0, 40.0, 40.0], area=400.0, current_zones=[], entered_zones=[],
                       start_time=0.0, end_time=None, snapshot=None, time=0.25)
    # In the zone from frame 3 (t 0.75), but the update waits until 1 s after the new event.
    assert update["current_zones"] == ["lower"] and update["entered_zones"] == ["lower"] and update["time"] == 1.25
    # Seen last at t 1.25; ended after max_age (2) missed frames; box and zones as last seen.
    assert end["end_time"] == 1.25 and end["time"] == 2.0 and end["box"] == [20.0, 70.0, 40.0, 90.0]
    assert end["current_zones"] == ["lower"] and end["entered_zones"] == ["lower"]


def test_rounded_is_python_round_of_every_float32():
    rng = np.random.RandomState(0)
    boxes = np.sort(rng.uniform(0, 640, (2000, 4)), axis=1).astype(np.float32)
    boxes[:20] = np.arange(80).reshape(20, 4) * 0.05  # near halfway values
    scores = rng.uniform(0, 1, 2000).astype(np.float32)
    expected = [[round(float(v), 1) for v in box] + [round(float((box[2] - box[0]) * (box[3] - box[1])), 1),
                                                   round(float(score), 4)] for box, score in zip(boxes, scores)]
    assert _rounded(boxes, scores) == expected  # exact: the same floats as the events had before


def test_label_change_is_an_update_and_top_score_is_kept():
    stage = _stage()
    labels = [0, 0, 1, 1, 1, 1, 1, 1]
    scores = [0.6, 0.7, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5]
    events = _frames(stage, [50] * 8, labels=labels, scores=scores, dt=0.5)
    flat = [e for frame in events for e in frame]
    assert [(e["event"], e["label"]) for e in flat] == [("new", "circle"), ("update", "square")]
    assert flat[1]["top_score"] == 0.9 and flat[1]["time"] == 1.5  # 1.3 vs 0.9 votes, at t 1.5 (1 s later)
    assert stage.finish(10.0)[0]["top_score"] == 0.9


def test_loitering_delays_zone_membership():
    loiter = ZoneConfig(points=LOWER.points, inertia=1, loitering_s=1.0)
    stage = _stage(zones={"lower": loiter})
    bottoms = [60] * 12
    zones_by_frame = []
    for i, bottom in enumerate(bottoms):
        frame = stage.update(_box(bottom), [0], np.array([0.8]), i * 0.25, 200, 100)
        zones_by_frame.append(frame.objects[0]["current_zones"] if frame.objects else None)
    # Confirmed at frame 1; inside since t 0.25 (its first frame as an object); 1 s later it counts.
    assert zones_by_frame[:7] == [None, [], [], [], [], ["lower"], ["lower"]]


def test_filters_run_before_tracking():
    stage = _stage(filters={"circle": FilterConfig(min_score=0.7)}, labels=["circle"])
    boxes = np.concatenate([_box(50), _box(50, x=100), _box(50, x=160)])
    for i in range(3):
        frame = stage.update(boxes, [0, 0, 1], np.array([0.9, 0.6, 0.9]), i * 0.1, 200, 100)
    assert [o["id"] for o in frame.objects] == [1]
    assert frame.detection_ids.tolist() == [1, -1, -1]


def test_bad_settings_are_errors_naming_the_key():
    with pytest.raises(UserError, match="config.yaml: objects.min_hits: expected >= 1, got 0"):
        check_settings(ObjectsConfig(min_hits=0), "config.yaml")
    bad = ObjectsConfig(sources={"cam": SourceObjectsConfig(filters={"circle": FilterConfig(min_score=1.5)})})
    with pytest.raises(UserError, match="objects.sources.cam.filters.circle: expected min_score in 0..1"):
        check_settings(bad, "config.yaml")


def test_counts_by_label_and_zone_reach_the_stats():
    from app.tracking.objects import counts
    from app.pipeline.stats import Stats
    stage = _stage(zones={"lower": ZoneConfig(points=LOWER.points, inertia=1)})
    boxes = np.concatenate([_box(40), _box(80, x=60), _box(90, x=120)])  # one above the zone, two in it
    for i in range(3):
        frame = stage.update(boxes, [0, 1, 1], np.array([0.9, 0.8, 0.7]), i * 0.1, 200, 100)
    got = counts(frame.objects)
    assert got == {"total": 3, "labels": {"circle": 1, "square": 2}, "zones": {"lower": 2}}
    stats = Stats()
    stats.set_objects("cam", got)
    assert stats.snapshot()["objects"] == {"cam": got}
