"""A real mosquitto broker on loopback with a password file, and a paho-mqtt subscriber, for tests.

    broker = Broker(tmp_path).start()          # a free port, user USER / PASSWORD, no persistence
    with Subscriber(broker, ["edgedet/#"]) as sub:
        sub.wait_for(lambda m: m.topic == "edgedet/available", timeout=10)
    broker.kill(); broker.start()              # the same port again
    broker.stop()

`Broker(..., tls=True)` adds a TLS listener (`tls_port`) with a CA and a server certificate made
by openssl for this run (`ca_path`). `mqtt_config(broker.port, password_file, **keys)` is the `mqtt:` section an app
under test needs. The `mosquitto` Debian package is installed by `scripts/setup.sh --system`;
without it the tests that use this module skip.
"""

import collections
import os
import shutil
import socket
import subprocess
import threading
import time

import pytest

from app_support import free_port, wait_for

USER, PASSWORD = "edgedet", "broker-pass-5821"
Received = collections.namedtuple("Received", "topic payload retain")


def require_mosquitto():
    if not shutil.which("mosquitto") or not shutil.which("mosquitto_passwd"):
        pytest.skip("mosquitto is not installed (scripts/setup.sh --system installs it)")


def _make_certificates(folder):
    """A self-signed CA and a server certificate for 127.0.0.1 signed by it (openssl)."""
    def run(*args):
        subprocess.run(["openssl"] + list(args), cwd=folder, check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]  # EC: quick to make
    run("req", "-x509", *key, "-days", "2", "-subj", "/CN=edgedet test CA", "-keyout", "ca.key", "-out", "ca.crt")
    run("req", *key, "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    with open(os.path.join(folder, "san.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", "san.ext", "-out", "server.crt")


class Broker(object):
    """mosquitto as a child process.

    Args:
      folder: a scratch folder.
      tls: add a TLS listener.
      port: the plain listener's port; None = a free one.
    """

    def __init__(self, folder, tls=False, port=None):
        require_mosquitto()
        self.folder, self.port = str(folder), port or free_port()
        self.tls_port = free_port() if tls else None
        self.ca_path = os.path.join(self.folder, "ca.crt") if tls else None
        self.proc = None
        passwords = os.path.join(self.folder, "passwords")
        subprocess.run(["mosquitto_passwd", "-c", "-b", passwords, USER, PASSWORD], check=True)
        lines = ["user root", "per_listener_settings false", "allow_anonymous false",
                 "password_file " + passwords, "persistence false", "log_dest file " + self.log_path(),
                 "listener {} 127.0.0.1".format(self.port)]
        if tls:
            _make_certificates(self.folder)
            lines += ["listener {} 127.0.0.1".format(self.tls_port), "cafile " + self.ca_path,
                      "certfile " + os.path.join(self.folder, "server.crt"),
                      "keyfile " + os.path.join(self.folder, "server.key")]
        self.conf = os.path.join(self.folder, "mosquitto.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def log_path(self):
        return os.path.join(self.folder, "mosquitto.log")

    def start(self, timeout=10.0):
        self.proc = subprocess.Popen(["mosquitto", "-c", self.conf], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        if not wait_for(self._accepts, timeout):
            self.stop()
            raise RuntimeError("mosquitto did not listen on {} within {} s".format(self.port, timeout))
        return self

    def _accepts(self):
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
            return True
        except OSError:
            return False

    def kill(self):
        """SIGKILL: the broker vanishes as a crashed or unplugged one does."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def stop(self):
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None


class Subscriber(object):
    """A paho-mqtt client that records every message of `topics` (a context manager).

    Args:
      broker: Broker.
      topics: topic filters to subscribe to.
    """

    def __init__(self, broker, topics):
        import paho.mqtt.client as mqtt
        if hasattr(mqtt, "CallbackAPIVersion"):
            self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-subscriber-{}".format(id(self)))
        else:
            self._client = mqtt.Client(client_id="test-subscriber-{}".format(id(self)))
        self._client.username_pw_set(USER, PASSWORD)
        self._topics, self._lock, self.messages = list(topics), threading.Lock(), []
        self._subscribed = threading.Event()
        self._client.on_connect = self._on_connect
        self._client.on_subscribe = lambda *args: self._subscribed.set()
        self._client.on_message = self._on_message
        self._broker = broker

    def _on_connect(self, client, *args):
        client.subscribe([(t, 0) for t in self._topics])

    def _on_message(self, client, userdata, message):
        with self._lock:
            self.messages.append(Received(message.topic, message.payload, bool(message.retain)))

    def __enter__(self):
        self._client.connect("127.0.0.1", self._broker.port, 30)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")
        return self

    def __exit__(self, *exc):
        self._client.disconnect()
        self._client.loop_stop()

    def publish(self, topic, payload):
        """Publishes as the test's user and waits until the broker has it."""
        self._client.publish(topic, payload, qos=1).wait_for_publish(5)

    def received(self, predicate=lambda m: True):
        with self._lock:
            return [m for m in self.messages if predicate(m)]

    def wait_for(self, predicate, timeout):
        """The messages matching `predicate` once there is one (or [] after `timeout` s)."""
        return wait_for(lambda: self.received(predicate), timeout)

    def settle(self, seconds=0.5):
        """Waits until no message came for `seconds` (the retained burst after subscribing is over)."""
        count = -1
        while count != len(self.received()):
            count = len(self.received())
            time.sleep(seconds)


def mqtt_config(port, password_file, **keys):
    """The `mqtt:` section (a dict) of an app that talks to the broker on `port` as USER."""
    section = {"enabled": True, "host": "127.0.0.1", "port": port, "username": USER,
               "password_file": str(password_file), "reconnect_min_s": 1, "reconnect_max_s": 2}
    section.update(keys)
    return section


def write_password(folder, password=PASSWORD):
    path = os.path.join(str(folder), "mqtt-password")
    with open(path, "w") as f:
        f.write(password + "\n")
    os.chmod(path, 0o600)
    return path
