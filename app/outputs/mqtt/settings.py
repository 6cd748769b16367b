"""The `mqtt:` section checked before anything opens: ranges, topic prefixes, files, the password.

Every error is a UserError naming the key. The password is read from `password_file` or the
environment variable `password_env` (never from config.yaml itself, which is often shared) and
registered with app.redact, so it is masked should it ever reach a log line, an event or the stats.
"""

import os
import socket

from app.errors import UserError
from app.outputs.mqtt.client import import_paho
from app.redact import add_secret
from app.textfile import read_text


def _range_checks(s):
    return (("port", 1 <= s.port <= 65535, "1..65535"), ("keepalive_s", s.keepalive_s >= 5, ">= 5"),
            ("qos", s.qos in (0, 1), "0 or 1"), ("snapshot_quality", 1 <= s.snapshot_quality <= 100, "1..100"),
            ("outbox_size", s.outbox_size >= 1, ">= 1"), ("snapshot_interval_s", s.snapshot_interval_s >= 0, ">= 0"),
            ("connect_timeout_s", s.connect_timeout_s > 0, "> 0"), ("reconnect_min_s", s.reconnect_min_s > 0, "> 0"),
            ("reconnect_max_s", s.reconnect_max_s >= s.reconnect_min_s, ">= reconnect_min_s"),
            ("host", bool(s.host), "a host name or address"))


def _check_prefix(value, key, where):
    if not value or value.strip("/") != value or any(c in value for c in "+#\0"):
        raise UserError("{}: mqtt.{}: expected a topic prefix without +, # or a leading or trailing /, got {!r}"
                        .format(where, key, value))


def check_settings(settings, where):
    """Checks an enabled `mqtt:` section before anything opens; returns the password ("" for none).

    Args:
      settings: app.config.MqttConfig.
      where: the config file name for messages.

    Raises:
      UserError: naming the key of a bad value, an unreadable password, or paho-mqtt missing.
    """
    import_paho()
    for key, ok, expected in _range_checks(settings):
        if not ok:
            raise UserError("{}: mqtt.{}: expected {}, got {!r}".format(where, key, expected, getattr(settings, key)))
    _check_prefix(settings.topic_prefix, "topic_prefix", where)
    _check_prefix(settings.discovery_prefix, "discovery_prefix", where)
    if settings.password_file and settings.password_env:
        raise UserError("{}: mqtt.password_file and mqtt.password_env are both set; keep one".format(where))
    if (settings.password_file or settings.password_env) and not settings.username:
        raise UserError("{}: mqtt.username is empty but a password is set; MQTT sends a password only with "
                        "a user name".format(where))
    for key in ("ca_certs", "certfile", "keyfile"):
        path = getattr(settings.tls, key)
        if path and not os.path.isfile(path):
            raise UserError("{}: mqtt.tls.{}: {} is not a file. Give the PEM file's path, or leave it empty"
                            .format(where, key, path))
    return read_password(settings, where)


def read_password(settings, where):
    """The broker password from password_file (first line) or the variable password_env; "" for none."""
    if settings.password_file:
        password = read_text(settings.password_file, "mqtt.password_file",
                             "Put the broker password on its first line.").strip()
        key = "mqtt.password_file"
    elif settings.password_env:
        password, key = os.environ.get(settings.password_env, ""), "mqtt.password_env"
    else:
        return ""
    if not password:
        raise UserError("{}: {}: {} holds no password. Set it, or clear the key for a login without one"
                        .format(where, key, settings.password_file or settings.password_env))
    add_secret(password)
    return password


def client_id(settings):
    """mqtt.client_id, or edgedet-<hostname> (two devices must not share one: the broker drops the older)."""
    return settings.client_id or "edgedet-{}".format(socket.gethostname())
