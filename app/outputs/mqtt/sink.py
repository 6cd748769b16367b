"""The MQTT sink: object events, per-label counts, best snapshots and Home Assistant discovery.

Topics (prefix = mqtt.topic_prefix; source and label as `slug`s), as Frigate lays them out:
  <prefix>/available                  "online" (retained, at each connect), "offline" (last will, clean stop)
  <prefix>/<source>/events            every object event, JSON (app.tracking.objects)
  <prefix>/<source>/<label>           objects of that label in view now: an integer, retained, on change
  <prefix>/<source>/<label>/snapshot  the label's best frame with its box drawn: JPEG, retained
  <discovery_prefix>/.../config       Home Assistant discovery (app.outputs.mqtt.hass), retained
On the output thread the sink only compares counts and queues messages in the outbox; a
snapshot's JPEG is encoded later by the publisher thread (the message holds the frame and box).
A label's snapshot is sent when one of its objects scores above the label's best since the label
was last out of view, at most once per snapshot_interval_s: a better frame inside the interval
waits for the interval's end, replaced by any still better one.
"""

import functools
import json
import re

from app import __version__
from app.errors import UserError
from app.outputs.mqtt import hass
from app.outputs import files
from app.outputs.mqtt.client import MqttClient
from app.outputs.mqtt.settings import client_id
from app.outputs.mqtt.outbox import Outbox
from app.redact import redact, redact_value

_NOT_SLUG = re.compile(r"[^A-Za-z0-9_-]+")


def slug(name):
    """`name` (masked) as one topic level and HA id: runs of characters other than [A-Za-z0-9_-] -> "_"."""
    return _NOT_SLUG.sub("_", redact(name)).strip("_") or "_"


def encode_snapshot(frame, box, class_id, label, score, quality):
    """JPEG bytes of a copy of `frame` (uint8 [H, W, 3] BGR) with `box` (pixels x0, y0, x1, y1) drawn."""
    return files.annotated_jpeg(frame, box, class_id, score, label, quality)


class _Source(object):
    """One source's topics and what was last queued for them."""

    def __init__(self, prefix, name, labels):
        self.name, self.labels = name, {label: slug(label) for label in labels}
        self.base = "{}/{}".format(prefix, name)
        self.events = self.base + "/events"
        self.counts = {label: 0 for label in labels}
        self.best, self.pending, self.sent_at = {}, {}, {}

    def count_topic(self, label):
        return "{}/{}".format(self.base, self.labels.get(label) or slug(label))

    def snapshot_topic(self, label):
        return self.count_topic(label) + "/snapshot"


class MqttSink(object):
    """Pipeline sink publishing through an MqttClient (`attach`) via a bounded Outbox.

    Args:
      settings: app.config.MqttConfig.
      sources: dict source name -> (topic name, labels tracked on it).
      class_ids: dict label -> class id (box colours of the snapshots).
      model: what runs live ("int8", "edgetpu", ...), for the HA device block.
    """

    def __init__(self, settings, sources, class_ids, model=""):
        prefix = settings.topic_prefix
        self._settings, self._class_ids, self._model = settings, class_ids, model
        self.available = "{}/available".format(prefix)
        self._sources = {name: _Source(prefix, topic, labels) for name, (topic, labels) in sources.items()}
        self.outbox = Outbox(settings.outbox_size)
        self._client = None
        for source in self._sources.values():  # a known 0 rather than HA's "unknown" until something shows
            for label in source.counts:
                self.outbox.set(source.count_topic(label), "0")

    def attach(self, client):
        self._client = client

    def birth(self):
        """[(topic, payload)] of the HA discovery configs (sent after every connect)."""
        if not self._settings.discovery:
            return []
        messages = []
        for source in self._sources.values():
            def topics(label_slug, base=source.base):
                count = "{}/{}".format(base, label_slug)
                return {"count": count, "snapshot": count + "/snapshot" if self._settings.snapshots else None,
                        "available": self.available}
            messages += hass.discovery_messages(self._settings.discovery_prefix, slug(self._settings.topic_prefix),
                                                source.name, list(source.labels.values()), topics, __version__,
                                                self._model)
        return messages

    def write(self, result):
        """Counts on change and snapshot candidates of one frame (output thread: queues only)."""
        source = self._sources.get(result.source)
        if source is None or result.objects is None:
            return
        counts = {}
        for obj in result.objects.objects:
            counts[obj["label"]] = counts.get(obj["label"], 0) + 1
        for label in set(source.counts) | set(counts):
            now = counts.get(label, 0)
            if now != source.counts.get(label):
                source.counts[label] = now
                self.outbox.set(source.count_topic(label), str(now))
                if now == 0:
                    source.best.pop(label, None)  # the next arrival starts a new best
        if self._settings.snapshots:
            self._snapshots(source, result)

    def _snapshots(self, source, result):
        for obj in result.objects.objects:
            label = obj["label"]
            if obj["score"] > source.best.get(label, 0.0):  # only a detection of this frame can beat it
                source.best[label] = obj["score"]
                source.pending[label] = functools.partial(
                    encode_snapshot, result.raw, obj["box"], self._class_ids.get(label, 0), label, obj["score"],
                    self._settings.snapshot_quality)
        for label in list(source.pending):
            if result.time - source.sent_at.get(label, float("-inf")) >= self._settings.snapshot_interval_s:
                self.outbox.set(source.snapshot_topic(label), source.pending.pop(label))
                source.sent_at[label] = result.time

    def object_events(self, events):
        """Each object event as JSON on its source's events topic."""
        for event in events:
            source = self._sources.get(event.get("source"))
            if source is not None:
                self.outbox.put(source.events, json.dumps(redact_value(event), separators=(",", ":")))

    def close(self):
        if self._client is not None:
            self._client.close()


def topic_names(settings, sources, specs, where):
    """dict source name -> topic name: mqtt.source_names (by --source value or name), else slug(name).

    Raises:
      UserError: a source_names key that names no source, or a value that is not a slug.
    """
    names, used = {}, set()
    for spec, source in zip(specs, sources):
        key = spec if spec in settings.source_names else source.name
        used.add(key)
        names[source.name] = settings.source_names.get(key) or slug(source.name)
    for key, value in settings.source_names.items():
        if key not in used:
            raise UserError("{}: mqtt.source_names.{}: no --source has this value or name".format(where, redact(key)))
        if slug(value) != value:
            raise UserError("{}: mqtt.source_names.{}: {!r} is not a topic name: use letters, digits, - and _ only"
                            .format(where, redact(key), value))
    return names


def open_sinks(settings, password, stages, sources, specs, labels, stats, where):
    """[MqttSink], connected, when mqtt.enabled (else []).

    Args:
      settings: app.config.MqttConfig (already checked by app.outputs.mqtt.settings.check_settings).
      password: the broker password check_settings returned.
      stages: app.tracking.objects.ObjectStages, or None when objects are off.
      sources: the opened sources; specs: the --source values they came from.
      labels: dict class id -> label of the live model.
      stats: app.pipeline.stats.Stats (its "outputs.mqtt" counters).
      where: the config file name for messages.

    Raises:
      UserError: objects are off, a bad source name, or the broker cannot be used (app.outputs.mqtt.client).
    """
    if not settings.enabled:
        return []
    if stages is None:
        raise UserError("{}: mqtt.enabled needs objects.enabled: true (counts, events and snapshots are of "
                        "tracked objects)".format(where))
    names = topic_names(settings, sources, specs, where)
    sink = MqttSink(settings, {s.name: (names[s.name], stages.labels(s.name)) for s in sources},
                    {name: i for i, name in labels.items()}, stats.model)
    client = MqttClient(settings, password, client_id(settings), sink.available, sink.outbox,
                        sink.birth, lambda counters: stats.set_output("mqtt", counters))
    sink.attach(client.start())
    return [sink]
