"""Home Assistant MQTT discovery: the retained configs that turn edgedet's topics into entities.

Per source and label, three entities on one device per source:
  binary_sensor  occupancy, ON while the label's count topic is > 0
  sensor         the count itself (state_class measurement)
  camera         the label's best snapshot JPEG (raw bytes on its topic)
Each config goes to `<discovery_prefix>/<component>/<node_id>/<object_id>/config` with
node_id the topic prefix and object_id `<source>_<label>_<kind>` (HA allows [a-zA-Z0-9_-] in
both, which app.outputs.mqtt.sink.slug guarantees). unique_id is `<node_id>_<object_id>`, so two
edgedet instances with different topic prefixes never collide. Every entity is unavailable while
`<prefix>/available` is "offline" (the last will).
"""

import json

ONLINE, OFFLINE = "online", "offline"
_OCCUPIED = "{{ 'ON' if value | int > 0 else 'OFF' }}"


def _device(node_id, source, version, model):
    return {"identifiers": ["{}_{}".format(node_id, source)], "name": "edgedet {}".format(source),
            "manufacturer": "edgedet", "model": model, "sw_version": version}


def _entity(node_id, source, label, kind, availability, device, version):
    object_id = "{}_{}_{}".format(source, label, kind)
    return object_id, {"unique_id": "{}_{}".format(node_id, object_id), "availability_topic": availability,
                       "payload_available": ONLINE, "payload_not_available": OFFLINE, "device": device,
                       "origin": {"name": "edgedet", "sw_version": version}}


def entity_configs(node_id, source, label, topics, device, version):
    """[(component, object_id, config dict)] of one source and label.

    Args:
      node_id: the topic prefix (slug).
      source, label: slugs, as in the topics.
      topics: dict with "count", "snapshot" (None = no camera) and "available" topic names.
      device: the source's device block.
      version: edgedet's version.
    """
    out = []
    for component, kind, fields in (
            ("binary_sensor", "occupancy", {"name": "{} occupancy".format(label), "state_topic": topics["count"],
                                            "value_template": _OCCUPIED, "payload_on": "ON", "payload_off": "OFF",
                                            "device_class": "occupancy"}),
            ("sensor", "count", {"name": "{} count".format(label), "state_topic": topics["count"],
                                 "state_class": "measurement", "unit_of_measurement": "objects"}),
            ("camera", "snapshot", {"name": "{} snapshot".format(label), "topic": topics["snapshot"]})):
        if component == "camera" and topics["snapshot"] is None:
            continue
        object_id, config = _entity(node_id, source, label, kind, topics["available"], device, version)
        config.update(fields)
        out.append((component, object_id, config))
    return out


def discovery_messages(discovery_prefix, node_id, source, labels, topics_of, version, model):
    """[(topic, JSON payload)] of every entity of one source: retained config messages.

    Args:
      discovery_prefix: HA's discovery prefix ("homeassistant").
      node_id: the topic prefix (slug).
      source: the source's topic name (slug).
      labels: the label slugs tracked on the source.
      topics_of: callable(label) -> the topics dict of entity_configs.
      version: edgedet's version; model: what runs live ("int8", "edgetpu", ...), for the device block.
    """
    device = _device(node_id, source, version, model)
    messages = []
    for label in labels:
        for component, object_id, config in entity_configs(node_id, source, label, topics_of(label), device, version):
            topic = "{}/{}/{}/{}/config".format(discovery_prefix, component, node_id, object_id)
            messages.append((topic, json.dumps(config, sort_keys=True)))
    return messages
