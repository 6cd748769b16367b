"""MQTT output: the outbox, the HA discovery payloads, the settings, and a REAL `python -m app`
publishing to a REAL mosquitto broker on loopback (tests/mqtt_broker.py) with a password file.

Against the broker: events, counts and snapshots arrive; discovery configs, counts and snapshots
are retained; Home Assistant's online re-sends the configs; kill -9 of the app makes the broker
publish the last will; TLS works with a CA made here and fails in one line without it; a broker killed
mid-run costs drops (counted in the stats file) but no frames, and the app reconnects when it is
back on the same port; a wrong password or a closed port at start is one line and exit 2.
"""

import json
import signal
import subprocess
import sys

import numpy as np
import pytest
import yaml

from app.config import MqttConfig, build
from app.errors import UserError
from app.outputs.mqtt import hass, settings as mqtt_settings
from app.outputs import overlay
from app.outputs.mqtt.sink import MqttSink, encode_snapshot, open_sinks, slug, topic_names
from app.pipeline.threads import FrameResult
from app.tracking.objects import ObjectFrame
from app.outputs.mqtt.outbox import Outbox
from app.redact import redact
from app_support import free_port, start_app, stop_app, wait_for
from conftest import ROOT
from mqtt_broker import PASSWORD, Broker, Subscriber, mqtt_config, write_password

SOURCE = "synthetic:640x480@30"
NODE = "edgedet/synthetic_640x480_30"
LABELS = ("circle", "square", "triangle")  # the demo model's


# ----------------------------------------------------------------------------- no broker


def test_outbox_drops_the_oldest_event_and_keeps_the_newest_state():
    box = Outbox(2)
    for i in range(5):
        box.put("e", str(i))
    box.set("count", "1")
    box.set("count", "2")
    assert (box.dropped, box.superseded, len(box)) == (3, 1, 3)
    taken = [box.take(0.0) for _ in range(4)]
    assert [(m.topic, m.payload, m.retain) for m in taken[:3]] == [("count", "2", True), ("e", "3", False),
                                                                   ("e", "4", False)]
    assert taken[3] is None


def test_slug_is_a_topic_level_and_masks_credentials():
    assert slug("synthetic:640x480@30") == "synthetic_640x480_30"
    assert slug("traffic light") == "traffic_light"
    assert slug("rtsp://admin:hunter22@10.0.0.5/live") == "rtsp_10_0_0_5_live"


def test_discovery_configs_follow_the_home_assistant_schema():
    def topics(label):
        return {"count": "edgedet/cam/" + label, "snapshot": "edgedet/cam/{}/snapshot".format(label),
                "available": "edgedet/available"}
    messages = dict(hass.discovery_messages("homeassistant", "edgedet", "cam", ["person"], topics, "0.1.0", "int8"))
    assert sorted(messages) == ["homeassistant/binary_sensor/edgedet/cam_person_occupancy/config",
                                "homeassistant/camera/edgedet/cam_person_snapshot/config",
                                "homeassistant/sensor/edgedet/cam_person_count/config"]
    occupancy = json.loads(messages["homeassistant/binary_sensor/edgedet/cam_person_occupancy/config"])
    assert occupancy["device_class"] == "occupancy" and occupancy["state_topic"] == "edgedet/cam/person"
    assert occupancy["unique_id"] == "edgedet_cam_person_occupancy"
    assert (occupancy["availability_topic"], occupancy["payload_available"], occupancy["payload_not_available"]) \
        == ("edgedet/available", "online", "offline")
    assert occupancy["device"]["identifiers"] == ["edgedet_cam"]
    count = json.loads(messages["homeassistant/sensor/edgedet/cam_person_count/config"])
    assert (count["state_topic"], count["state_class"]) == ("edgedet/cam/person", "measurement")
    camera = json.loads(messages["homeassistant/camera/edgedet/cam_person_snapshot/config"])
    assert camera["topic"] == "edgedet/cam/person/snapshot" and camera["device"] == occupancy["device"]


def test_snapshot_jpeg_has_the_box_drawn_in_the_class_colour():
    import cv2
    frame = np.full((480, 640, 3), 90, np.uint8)
    data = encode_snapshot(frame, [100.0, 120.0, 300.0, 360.0], 1, "square", 0.9, 90)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3) and frame.max() == 90  # drawn on a copy
    colour = np.array(overlay.class_colour(1), float)
    for x, y in ((100, 250), (300, 250), (200, 360), (150, 360)):  # left, right, bottom edges
        assert np.abs(image[y, x].astype(float) - colour).max() < 40, (x, y, image[y, x])
    assert np.abs(image[250, 200].astype(float) - 90).max() < 10  # inside stays the frame


def _frame(time_s, *objects):
    """A FrameResult of SOURCE at `time_s` whose objects are (label, score) pairs."""
    fields = [{"label": label, "score": score, "box": [10.0, 10.0, 50.0, 60.0]} for label, score in objects]
    image = np.zeros((480, 640, 3), np.uint8)
    return FrameResult(SOURCE, 0, SOURCE, time_s, image, image, None, None, None, "int8", {},
                       ObjectFrame(fields, [], None, []))


def _drain(outbox):
    taken = []
    message = outbox.take(0.0)
    while message is not None:
        taken.append(message)
        message = outbox.take(0.0)
    return {m.topic: m.payload for m in taken}


def test_sink_queues_counts_on_change_and_rate_limited_best_snapshots():
    sink = MqttSink(_settings(snapshot_interval_s=1.0), {SOURCE: ("cam", ["circle", "square"])},
                    {"circle": 0, "square": 1})
    assert _drain(sink.outbox) == {"edgedet/cam/circle": "0", "edgedet/cam/square": "0"}
    sink.write(_frame(0.0, ("circle", 0.6), ("circle", 0.5)))
    sent = _drain(sink.outbox)
    assert sent["edgedet/cam/circle"] == "2" and "edgedet/cam/square" not in sent
    assert callable(sent["edgedet/cam/circle/snapshot"])  # encoded later, on the publisher thread
    sink.write(_frame(0.5, ("circle", 0.8), ("circle", 0.5)))  # better, but inside the interval: held
    sink.write(_frame(0.6, ("circle", 0.7), ("circle", 0.5)))  # not better than the held one
    assert _drain(sink.outbox) == {}
    sink.write(_frame(1.0, ("circle", 0.7)))  # the interval is over: the held 0.8 goes, the count drops
    sent = _drain(sink.outbox)
    assert sent["edgedet/cam/circle"] == "1" and sent["edgedet/cam/circle/snapshot"].args[4] == 0.8
    sink.write(_frame(1.1))  # out of view: the next circle starts a new best
    sink.write(_frame(2.5, ("circle", 0.3)))
    sent = _drain(sink.outbox)
    assert sent["edgedet/cam/circle"] == "1" and sent["edgedet/cam/circle/snapshot"].args[4] == 0.3


def test_source_topic_names_and_their_errors_name_the_key():
    cam = type("Source", (), {"name": "rtsp://cam-1.lan/live"})()
    assert topic_names(_settings(), [cam], ["rtsp://cam-1.lan/live"], "c.yaml") == {cam.name: "rtsp_cam-1_lan_live"}
    named = _settings(source_names={"rtsp://cam-1.lan/live": "driveway"})
    assert topic_names(named, [cam], ["rtsp://cam-1.lan/live"], "c.yaml") == {cam.name: "driveway"}
    with pytest.raises(UserError, match=r"mqtt\.source_names\.0: no --source"):
        topic_names(_settings(source_names={"0": "porch"}), [cam], [cam.name], "c.yaml")
    with pytest.raises(UserError, match=r"'drive way' is not a topic name"):
        topic_names(_settings(source_names={cam.name: "drive way"}), [cam], [cam.name], "c.yaml")
    with pytest.raises(UserError, match=r"mqtt\.enabled needs objects\.enabled: true"):
        open_sinks(_settings(), "", None, [cam], [cam.name], {0: "circle"}, None, "c.yaml")


def _settings(**keys):
    return build(MqttConfig, dict({"enabled": True, "username": "edgedet"}, **keys), "c.yaml: mqtt")


@pytest.mark.parametrize("keys, named", [
    ({"port": 0}, "mqtt.port"), ({"qos": 2}, "mqtt.qos"), ({"topic_prefix": "edgedet/"}, "mqtt.topic_prefix"),
    ({"discovery_prefix": "home+"}, "mqtt.discovery_prefix"), ({"outbox_size": 0}, "mqtt.outbox_size"),
    ({"reconnect_min_s": 5, "reconnect_max_s": 2}, "mqtt.reconnect_max_s"),
    ({"tls": {"ca_certs": "/nonexistent/ca.crt"}}, "mqtt.tls.ca_certs"),
    ({"password_file": "/nonexistent/pw"}, "mqtt.password_file"),
    ({"password_env": "EDGEDET_TEST_UNSET_VARIABLE"}, "mqtt.password_env"),
    ({"username": "", "password_env": "HOME"}, "mqtt.username"),
])
def test_bad_settings_name_the_key(keys, named):
    with pytest.raises(UserError, match=named.replace(".", r"\.")):
        mqtt_settings.check_settings(_settings(**keys), "c.yaml")


def test_unknown_key_and_wrong_type_name_the_key():
    with pytest.raises(UserError, match=r"mqtt\.tls\.cafile: unknown key"):
        _settings(tls={"cafile": "x"})
    with pytest.raises(UserError, match=r"mqtt\.port: expected int"):
        _settings(port="mqtt")


def test_password_from_file_or_environment_is_masked_everywhere(tmp_path, monkeypatch):
    path = write_password(tmp_path, "file-pass-8841")
    assert mqtt_settings.check_settings(_settings(password_file=path), "c.yaml") == "file-pass-8841"
    monkeypatch.setenv("EDGEDET_TEST_MQTT_PASSWORD", "env-pass-2290")
    assert mqtt_settings.check_settings(_settings(password_env="EDGEDET_TEST_MQTT_PASSWORD"), "c.yaml") \
        == "env-pass-2290"
    assert redact("login env-pass-2290 and file-pass-8841") == "login *** and ***"


def test_missing_paho_is_one_line_only_when_mqtt_is_on(monkeypatch):
    monkeypatch.setitem(sys.modules, "paho.mqtt.client", None)  # `import paho.mqtt.client` now fails
    with pytest.raises(UserError, match="paho-mqtt is not installed"):
        mqtt_settings.check_settings(_settings(), "c.yaml")
    code = ("import sys; sys.modules['paho'] = None; from app.cli import main; from app.errors import run_cli; "
            "sys.exit(run_cli(main, ['--headless', '--no-reference', '--max-frames', '3', '--log-level', 'error']))")
    done = subprocess.run([sys.executable, "-c", code], cwd=str(ROOT), stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=120)
    assert done.returncode == 0, done.stderr  # mqtt off: the app never imports paho


# ----------------------------------------------------------------------------- a real broker


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    running = Broker(tmp_path_factory.mktemp("broker")).start()
    yield running
    running.stop()


def _config(tmp_path, port, **mqtt_keys):
    """A config.yaml for the demo model on SOURCE with MQTT to the broker on `port`; frequent object updates."""
    cfg = {"mqtt": mqtt_config(port, write_password(tmp_path), **mqtt_keys),
           "objects": {"update_interval_s": 0.2}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _app(config, *extra):
    return start_app(["--config", config, "--headless", "--no-reference", "--source", SOURCE,
                      "--log-level", "info"] + list(extra))


def _stats(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (IOError, ValueError):
        return None


def _mqtt_stats(path):
    stats = _stats(path)
    return (stats or {}).get("outputs", {}).get("mqtt")


def test_app_publishes_events_counts_snapshots_and_discovery(tmp_path, broker):
    import cv2
    config = _config(tmp_path, broker.port)
    with Subscriber(broker, ["edgedet/#"]) as live:
        proc = _app(config, "--max-frames", "90", "--stats", str(tmp_path / "stats.json"))
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        assert live.wait_for(lambda m: m.payload == b"offline" and not m.retain, 5)  # a clean stop says it
    published = live.received(lambda m: not m.retain)  # by this run, not left by an earlier test
    assert (published[0].topic, published[0].payload) == ("edgedet/available", b"online")
    events = [json.loads(m.payload) for m in published if m.topic == NODE + "/events"]
    assert events and {e["event"] for e in events} >= {"new", "end"}
    assert all(e["type"] == "object" and e["source"] == SOURCE and len(e["box"]) == 4 for e in events)
    counts = [int(m.payload) for m in published if m.topic == NODE + "/circle"]
    assert counts[0] == 0 and max(counts) >= 1
    assert PASSWORD not in err
    with Subscriber(broker, ["edgedet/#", "homeassistant/#"]) as late:  # what a newcomer sees: retained
        late.settle()
        retained = {m.topic: m.payload for m in late.received() if m.retain}
    configs = [t for t in retained if t.startswith("homeassistant/")]
    assert len(configs) == 3 * len(LABELS)
    occupancy = json.loads(retained["homeassistant/binary_sensor/edgedet/synthetic_640x480_30_circle_occupancy/config"])
    assert occupancy["state_topic"] == NODE + "/circle" and occupancy["availability_topic"] == "edgedet/available"
    assert retained["edgedet/available"] == b"offline"
    snapshots = [t for t in retained if t.endswith("/snapshot")]
    assert snapshots
    image = cv2.imdecode(np.frombuffer(retained[snapshots[0]], np.uint8), cv2.IMREAD_COLOR)
    assert image.shape == (480, 640, 3)
    stats = _mqtt_stats(str(tmp_path / "stats.json"))
    assert stats["published"] >= len(events) + len(configs) and stats["dropped"] == 0


def test_home_assistant_online_resends_discovery_and_kill_9_publishes_the_last_will(tmp_path, broker):
    config = _config(tmp_path, broker.port)
    with Subscriber(broker, ["edgedet/available", "homeassistant/+/edgedet/+/config"]) as sub:
        proc = _app(config)
        try:
            assert sub.wait_for(lambda m: m.payload == b"online" and not m.retain, 60)
            sub.settle(0.3)
            def sent_configs():
                return len(sub.received(lambda m: m.topic.startswith("homeassistant/") and not m.retain))
            assert sent_configs() == 3 * len(LABELS)
            sub.publish("homeassistant/status", "online")  # Home Assistant restarted
            assert wait_for(lambda: sent_configs() == 6 * len(LABELS), 5)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
        assert sub.wait_for(lambda m: m.payload == b"offline" and not m.retain, 5)  # not an earlier test's


def test_broker_lost_mid_run_costs_drops_not_frames_and_the_app_reconnects(tmp_path):
    broker = Broker(tmp_path).start()  # its own: this test kills it
    stats_path = str(tmp_path / "stats.json")
    proc = _app(_config(tmp_path, broker.port, outbox_size=2), "--stats", stats_path)
    try:
        assert wait_for(lambda: (_mqtt_stats(stats_path) or {}).get("published", 0) > 5, 60)
        broker.kill()
        assert wait_for(lambda: _mqtt_stats(stats_path)["connected"] is False, 10)
        frames = _stats(stats_path)["sources"][SOURCE]["processed"]
        assert wait_for(lambda: _mqtt_stats(stats_path)["dropped"] > 0, 20)
        assert wait_for(lambda: _stats(stats_path)["sources"][SOURCE]["processed"] > frames + 30, 10)  # live path on
        assert _mqtt_stats(stats_path)["connected"] is False
        with Subscriber(broker.start(), ["edgedet/#"]) as sub:
            assert sub.wait_for(lambda m: m.topic == "edgedet/available" and m.payload == b"online", 15)
            assert sub.wait_for(lambda m: m.topic.startswith(NODE + "/"), 15)
        assert wait_for(lambda: _mqtt_stats(stats_path)["reconnects"] >= 1, 5)
    finally:
        code, _, err = stop_app(proc)
        broker.stop()
    assert code == 0, err
    assert "lost the broker" in err and PASSWORD not in err


def _one_line_exit_2(config):
    proc = _app(config, "--log-level", "warning")
    _, err = proc.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith("INFO: ")]  # TFLite's own
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("edgedet: error: "), err
    return lines[0]


def test_wrong_password_at_start_is_one_line_and_exit_2(tmp_path, broker):
    config = _config(tmp_path, broker.port)
    write_password(tmp_path, "not-the-password")
    line = _one_line_exit_2(config)
    assert "refused the login" in line and "mqtt.username" in line and "not-the-password" not in line


def test_unreachable_broker_at_start_is_one_line_unless_told_to_wait(tmp_path):
    port = free_port()  # nothing listens there
    line = _one_line_exit_2(_config(tmp_path, port))
    assert "mqtt.host/mqtt.port 127.0.0.1:{}".format(port) in line and "wait_for_broker" in line
    stats_path = str(tmp_path / "stats.json")
    proc = _app(_config(tmp_path, port, wait_for_broker=True), "--stats", stats_path)
    broker = None
    try:
        assert wait_for(lambda: _stats(stats_path) and _stats(stats_path)["sources"][SOURCE]["processed"] > 10, 60)
        broker = Broker(tmp_path, port=port).start()  # the broker comes up late, on that port
        with Subscriber(broker, ["edgedet/#"]) as sub:
            assert sub.wait_for(lambda m: m.topic == "edgedet/available" and m.payload == b"online", 15)
    finally:
        code, _, err = stop_app(proc)
        if broker is not None:
            broker.stop()
    assert code == 0 and "retrying in the background" in err, err


def test_tls_with_a_self_signed_ca(tmp_path):
    broker = Broker(tmp_path, tls=True).start()
    try:
        trusted = _config(tmp_path, broker.tls_port, host="localhost",  # the certificate names 127.0.0.1
                          tls={"enabled": True, "ca_certs": broker.ca_path, "insecure": True})
        with Subscriber(broker, ["edgedet/available"]) as sub:
            proc = _app(trusted, "--max-frames", "10")
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            assert [m.payload for m in sub.wait_for(lambda m: True, 5)][:2] == [b"online", b"offline"]
        line = _one_line_exit_2(_config(tmp_path, broker.tls_port, tls={"enabled": True}))  # system CAs only
        assert "mqtt.tls: the TLS handshake" in line and "CERTIFICATE_VERIFY_FAILED" in line
    finally:
        broker.stop()
