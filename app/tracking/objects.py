"""Detections become objects, per source: filters -> tracker -> zones -> object events.

Runs on the output thread after decode (`Pipeline(objects=ObjectStages(...))`). Each frame gives
an `ObjectFrame` on `FrameResult.objects` (for the overlay, the web view and the API) and a list
of object events, which the pipeline hands to every sink with `object_events(events)`:

  {"type": "object", "event": "new|update|end", "time": T, "id": N, "source": S, "label": L,
   "score": P, "top_score": P, "box": [x0, y0, x1, y1], "area": A, "current_zones": [...],
   "entered_zones": [...], "start_time": T, "end_time": T or null, "snapshot": null}

`new` when a track is confirmed; `update` when its zones, label or top score changed since the
last event, at most once per `update_interval_s`; `end` when the track ends (or the app stops),
with `end_time` the last frame the object was seen in. While a track coasts (no detection this
frame) its box, score and zones stay those of its last detection.
Boxes are source-frame pixels; times are the frames' wall-clock seconds; `snapshot` is null here
and filled by app.outputs.recordings.snapshots (the first sink) once the object's JPEG is on disk. An object
is in a zone once its box's bottom centre was inside for `inertia` frames running and then
`loitering_s` seconds; it leaves on its first frame outside.
"""

import collections
import logging
import math

import numpy as np

from app.tracking import filters, zones as zones_mod
from app.config import SourceObjectsConfig
from app.errors import UserError
from app.tracking.floats import float32_values, listed
from app.tracking.tracker import Tracker

log = logging.getLogger(__name__)

# objects: list of the confirmed objects' event fields (dicts, see above) this frame;
# zones: list of app.tracking.zones.Zone drawn on this frame; detection_ids: int64 [K] track id of
# each of the frame's detections, -1 when filtered out or not yet confirmed.
ObjectFrame = collections.namedtuple("ObjectFrame", "objects zones detection_ids events")


class _Object(object):
    """One confirmed track's event state."""

    def __init__(self, track_id, start_time):
        self.id, self.start_time, self.end_time = int(track_id), round(float(start_time), 3), None
        self.last_seen = self.start_time
        self.label, self.score, self.top_score, self.box, self.area = "", 0.0, 0.0, [], 0.0
        self.current_zones, self.entered_zones = [], []
        self.inside = {}         # zone name -> (consecutive frames inside, time of the first)
        self.sent = None         # (label, top_score, current_zones) of the last event
        self.sent_at = 0.0

    def see(self, values, seen):
        """This frame's detection: `_rounded_values` [x0, y0, x1, y1, area, score]; `seen` its time."""
        self.box, self.area, self.score = values[:4], values[4], values[5]
        self.top_score = max(self.top_score, self.score)
        self.last_seen = seen

    def fields(self, source):
        """The event fields (values already rounded when they were set)."""
        return {"id": self.id, "source": source, "label": self.label, "score": self.score,
                "top_score": self.top_score, "box": self.box, "area": self.area,
                "current_zones": list(self.current_zones), "entered_zones": list(self.entered_zones),
                "start_time": self.start_time, "end_time": self.end_time, "snapshot": None}


class SourceObjects(object):
    """The object stage of one source.

    Args:
      source: the source's name (events carry it).
      label_names: the model's labels in class-id order.
      settings: app.config.ObjectsConfig (tracker and event settings).
      source_config: app.config.SourceObjectsConfig (labels, filters, zones).
      where: the source's dotted config key for messages.
    """

    def __init__(self, source, label_names, settings, source_config, where):
        self.source, self._labels, self._where = source, list(label_names), where
        self._rules = filters.make_rules(source_config, self._labels, where)
        self._zone_configs = source_config.zones
        for name, zone in self._zone_configs.items():
            zones_mod.check_zone(zone, self._labels, "{}.zones.{}".format(where, name))
        self._tracker = Tracker(len(self._labels), settings.min_hits, settings.max_age, settings.min_iou)
        self._interval = settings.update_interval_s
        self._zones_by_size = {}  # (width, height) -> (zones, their zones.ZoneTests)
        self._objects = collections.OrderedDict()

    @property
    def labels(self):
        """The labels tracked on this source: objects.sources.S.labels, else every label of the model."""
        return [name for name, keep in zip(self._labels, self._rules.keep) if keep]

    def zones_for(self, width, height):
        """The zones resolved for a frame size. Where a point falls outside a frame of this size
        (a source whose size was not known at start-up), the zones are skipped with a warning."""
        return self._zones_and_edges(width, height)[0]

    def _zones_and_edges(self, width, height):
        """(zones_for(width, height), zones.zone_tests of them), made once per frame size."""
        if (width, height) not in self._zones_by_size:
            try:
                found = zones_mod.make_zones(self._zone_configs, self._labels, width, height, self._where + ".zones")
            except UserError as e:
                log.warning("%s; zones of %s are off for %dx%d frames", e, self.source, width, height)
                found = []
            self._zones_by_size[(width, height)] = (found, zones_mod.zone_tests(found))
        return self._zones_by_size[(width, height)]

    def update(self, boxes, class_ids, scores, now, width, height):
        """One frame: filter, track, place in zones, make events.

        Args:
          boxes: float32 [K, 4] pixels (x0, y0, x1, y1); class_ids int [K]; scores float32 [K] (the
            filters and the tracker see float32 values: other dtypes are rounded to float32 first).
          now: the frame's wall-clock time in seconds.
          width, height: the frame size in pixels.

        Returns:
          ObjectFrame.
        """
        boxes, class_ids, scores = listed(boxes, np.float32, 4), listed(class_ids, np.int64), listed(scores, np.float32)
        keep = filters.kept(self._rules, boxes, class_ids, scores)
        if all(keep):
            keep = None  # every detection passed: nothing to copy
        else:
            boxes, class_ids, scores = ([v for v, k in zip(values, keep) if k] for values in (boxes, class_ids, scores))
        tracks = self._tracker.track(boxes, class_ids, scores, now)
        zones, tests = self._zones_and_edges(width, height)
        inside = zones_mod.inside_each(tests, [zones_mod.bottom_centre(box) for box in tracks.boxes])
        events = [self._end(i, now) for i in tracks.ended if i in self._objects]
        objects = self._advance(tracks, zones, inside, now, events)
        return ObjectFrame(objects, zones, np.array(_detection_ids(keep, tracks.detection_ids), np.int64), events)

    def finish(self, now):
        """`end` events of every live object (the app is stopping)."""
        return [self._end(i, now) for i in list(self._objects)]

    def _advance(self, tracks, zones, inside, now, events):
        """Updates the objects of the confirmed tracks (tracker.TrackLists), appends their new/update
        events to `events`; returns their event fields. `inside`: [M] lists of Z bools, bottom
        centres in the zones."""
        objects, seen = [], round(now, 3)
        for track_id, start, class_id, matched, values, hits in zip(
                tracks.ids, tracks.start_times, tracks.class_ids, tracks.matched,
                _rounded_values(tracks.boxes, tracks.scores), inside):
            obj = self._objects.get(track_id)
            if obj is None:
                obj = self._objects[track_id] = _Object(track_id, start)
            obj.label = self._labels[class_id]
            if matched:  # a coasting track keeps its last seen box, score and zones
                obj.see(values, seen)
                _place(obj, zones, hits, class_id, now)
            event = self._event(obj, now)
            if event is not None:
                events.append(event)
            objects.append(obj.fields(self.source))
        return objects

    def _event(self, obj, now):
        state = (obj.label, obj.top_score, obj.current_zones)
        if obj.sent is None:
            kind = "new"
        elif state != obj.sent and now - obj.sent_at >= self._interval:
            kind = "update"
        else:
            return None
        obj.sent, obj.sent_at = (obj.label, obj.top_score, list(obj.current_zones)), now
        return _event(kind, now, obj.fields(self.source))

    def _end(self, track_id, now):
        obj = self._objects.pop(track_id)
        obj.end_time = obj.last_seen
        return _event("end", now, obj.fields(self.source))


def _detection_ids(keep, tracked):
    """[K] track id of each of a frame's detections (-1 when filtered out), from `tracked`, those of
    the kept ones (`keep`: [K] bools, or None when every detection was kept)."""
    if keep is None:
        return tracked
    ids = iter(tracked)
    return [next(ids) if k else -1 for k in keep]


def _rounded(boxes, scores):
    """`_rounded_values` of arrays: boxes float32 [M, 4] pixels (x0, y0, x1, y1), scores float32 [M]."""
    return _rounded_values(listed(boxes, np.float32, 4), listed(scores, np.float32))


def _rounded_values(boxes, scores):
    """[M] lists [x0, y0, x1, y1, area, score]: `round(float(v), digits)` of each float32 value, the
    area being the float32 product of the float32 sides (as numpy computes it for float32 boxes).
    Events show boxes and areas to 0.1 px and scores to 1e-4 (no float32 noise in the JSON).

    A float32 times 10 or 10**4 is exact in float64 (24 + 4 or 14 bits), so round() (half to even
    on the exact value) and the correctly rounded division give round(v, digits), 3x faster; a zero
    takes the value's sign, as round's does.

    Args:
      boxes: [M] lists (x0, y0, x1, y1) of float32 values, pixels; scores: [M] float32 values.
    """
    sides = float32_values([v for b in boxes for v in (b[2] - b[0], b[3] - b[1])])
    areas = float32_values([w * h for w, h in zip(sides[::2], sides[1::2])])
    sign = math.copysign
    tenths = [round(v * 10.0) / 10.0 or sign(0.0, v)
              for box, area in zip(boxes, areas) for v in (box[0], box[1], box[2], box[3], area)]
    return [tenths[i:i + 5] + [round(score * 10000.0) / 10000.0 or sign(0.0, score)]
            for i, score in zip(range(0, len(tenths), 5), scores)]


def _place(obj, zones, inside, class_id, now):
    """Zone membership with inertia and loitering; the bottom centre was tested by the caller."""
    current = []
    for zone, hit in zip(zones, inside):
        if not hit or (zone.class_ids is not None and class_id not in zone.class_ids):
            obj.inside.pop(zone.name, None)
            continue
        frames, since = obj.inside.get(zone.name, (0, now))
        obj.inside[zone.name] = (frames + 1, since)
        if frames + 1 >= zone.inertia and now - since >= zone.loitering_s:
            current.append(zone.name)
            if zone.name not in obj.entered_zones:
                obj.entered_zones.append(zone.name)
    obj.current_zones = current


def _event(kind, now, fields):
    event = {"type": "object", "event": kind, "time": round(now, 3)}
    event.update(fields)
    return event


def counts(objects):
    """{"total": N, "labels": {label: N}, "zones": {zone: N}} of a frame's objects (ObjectFrame.objects):
    what is in view now, by label and by current zone (the stats file and the web view show it)."""
    labels, zones = {}, {}
    for obj in objects:
        labels[obj["label"]] = labels.get(obj["label"], 0) + 1
        for zone in obj["current_zones"]:
            zones[zone] = zones.get(zone, 0) + 1
    return {"total": len(objects), "labels": labels, "zones": zones}


class ObjectStages(object):
    """One SourceObjects per source, called by the pipeline's output thread.

    Args:
      stages: dict source name -> SourceObjects.
    """

    def __init__(self, stages):
        self._stages = dict(stages)

    def update(self, result):
        """ObjectFrame of a FrameResult (boxes in pixels), or None for a source without a stage."""
        stage = self._stages.get(result.source)
        if stage is None:
            return None
        height, width = result.raw.shape[:2]
        d = result.detections
        return stage.update(result.boxes, d.class_ids, d.scores, result.time, width, height)

    def labels(self, source):
        """The labels tracked on a source (by its name)."""
        return self._stages[source].labels

    def finish(self, now):
        """`end` events of every live object of every source."""
        return [event for stage in self._stages.values() for event in stage.finish(now)]


def build_stages(settings, sources, specs, label_names, where):
    """ObjectStages for the opened sources, or None when `objects.enabled` is off.

    Args:
      settings: app.config.ObjectsConfig.
      sources: the opened sources (each with `name`, and `frame_size` (width, height) if known).
      specs: the --source values they were opened from, in the same order.
      label_names: the model's labels in class-id order.
      where: the config file name for messages.

    Raises:
      UserError: an `objects.sources` key that names no source, an unknown label, or a bad zone
        (for a source whose frame size is known, a point outside its frame).
    """
    if not settings.enabled:
        return None
    check_settings(settings, where)
    configs, used, stages = settings.sources, set(), {}
    for spec, source in zip(specs, sources):
        key = spec if spec in configs else source.name
        used.add(key)
        key_where = "{}: objects.sources.{}".format(where, key)
        source_config = configs.get(key, SourceObjectsConfig())
        stage = SourceObjects(source.name, label_names, settings, source_config, key_where)
        size = getattr(source, "frame_size", None)
        if size is not None:  # a point outside the frame is an error now, not a warning later
            zones_mod.make_zones(source_config.zones, label_names, size[0], size[1], key_where + ".zones")
        stages[source.name] = stage
    for key in configs:
        if key not in used:
            raise UserError("{}: objects.sources.{}: no --source has this value or name. Sources: {}".format(
                where, key, ", ".join(s.name for s in sources)))
    return ObjectStages(stages)


def check_settings(settings, where):
    """UserError naming the key of an out-of-range `objects:` value (tracker, events, filters)."""
    for key, ok, expected in (("min_hits", settings.min_hits >= 1, ">= 1"), ("max_age", settings.max_age >= 0, ">= 0"),
                              ("min_iou", 0.0 < settings.min_iou <= 1.0, "in (0, 1]"),
                              ("update_interval_s", settings.update_interval_s >= 0, ">= 0")):
        if not ok:
            raise UserError("{}: objects.{}: expected {}, got {}".format(where, key, expected, getattr(settings, key)))
    for name, source in settings.sources.items():
        for label, rule in source.filters.items():
            if not (0.0 <= rule.min_score <= 1.0 and rule.min_area >= 0 and rule.max_area >= 0):
                raise UserError("{}: objects.sources.{}.filters.{}: expected min_score in 0..1 and areas >= 0, "
                                "got {}".format(where, name, label, rule))

