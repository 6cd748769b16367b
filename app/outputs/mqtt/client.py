"""The broker connection: paho-mqtt 1.6+ or 2.x, imported only when `mqtt.enabled` is on.

Two threads own the network, so a broker that is slow or gone never holds up the output thread:
- paho's loop thread (`loop_start`) reads and writes the socket, pings, and after a lost
  connection reconnects with exponential backoff (`reconnect_delay_set(min, max)`);
- our publisher thread takes messages from the Outbox while connected and hands them to paho
  (encoding a lazy payload, such as a snapshot JPEG, there). After every (re)connect it first
  publishes the "birth": "online" on the availability topic, the discovery configs, and the last
  value of every retained topic (a broker restarted without persistence has lost them). It does
  the same when Home Assistant announces itself online on `<discovery_prefix>/status`.
The last will ("offline", retained) covers a process that dies; `close` publishes "offline" itself.

paho 2.x is driven through its VERSION2 callbacks, paho 1.x through its only ones; the two
differ in argument lists and in the type of the reason codes (int or ReasonCode).
"""

import logging
import ssl
import threading
import time

from app.errors import UserError
from app.outputs.mqtt.hass import OFFLINE, ONLINE

log = logging.getLogger(__name__)

POLL_S = 0.1
CLOSE_S = 1.0  # the most close() spends draining, saying "offline" and stopping paho


def import_paho():
    """paho.mqtt.client, or a UserError saying how to install it."""
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise UserError("mqtt.enabled is true but paho-mqtt is not installed: run pip install "
                        "'paho-mqtt>=1.6,<3', or set mqtt.enabled: false")
    return mqtt


def _reason(rc):
    """(failed, text) of a paho 1.x int or paho 2.x ReasonCode."""
    if isinstance(rc, int):
        return rc != 0, "code {}".format(rc)
    return rc.is_failure, str(rc)


def _new_client(mqtt, client_id):
    if hasattr(mqtt, "CallbackAPIVersion"):  # paho 2.x
        return mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id)
    return mqtt.Client(client_id=client_id)


def _configure(client, settings, password, will_topic):
    """Login, TLS, last will, backoff, paho's own queue bound and connect timeout."""
    if settings.username:
        client.username_pw_set(settings.username, password or None)
    tls = settings.tls
    if tls.enabled:
        client.tls_set(ca_certs=tls.ca_certs or None, certfile=tls.certfile or None, keyfile=tls.keyfile or None)
        client.tls_insecure_set(tls.insecure)
    client.will_set(will_topic, OFFLINE, qos=settings.qos, retain=True)
    client.reconnect_delay_set(min_delay=settings.reconnect_min_s, max_delay=settings.reconnect_max_s)
    client.max_queued_messages_set(settings.outbox_size)
    if hasattr(type(client), "connect_timeout"):  # a property in paho 2.x
        client.connect_timeout = settings.connect_timeout_s
    else:
        client._connect_timeout = settings.connect_timeout_s  # paho 1.6 reads this attribute


class MqttClient(object):
    """One broker connection with its publisher thread.

    Args:
      settings: app.config.MqttConfig (checked by app.outputs.mqtt.settings).
      password: the broker password or "".
      client_id: the MQTT client id.
      availability: the availability topic ("<prefix>/available").
      outbox: app.outputs.mqtt.outbox.Outbox the publisher drains.
      birth: callable() -> [(topic, payload)] of retained messages to send after each connect
        (the discovery configs).
      report: callable(dict) given the counters whenever they change (the app's stats).
    """

    def __init__(self, settings, password, client_id, availability, outbox, birth, report):
        self._mqtt = import_paho()
        self._settings, self._availability, self._outbox = settings, availability, outbox
        self._birth, self._report = birth, report
        self._client = _new_client(self._mqtt, client_id)
        try:
            _configure(self._client, settings, password, availability)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise UserError("mqtt.tls: cannot load the certificates ({}). Check mqtt.tls.ca_certs, certfile "
                            "and keyfile".format(e))
        self._client.on_connect, self._client.on_disconnect = self._on_connect, self._on_disconnect
        self._client.on_message = self._on_message
        self._answer = threading.Event()   # the broker answered the first CONNECT
        self._refused = None               # its refusal text, if it refused
        self._connected = threading.Event()
        self._birth_due = threading.Event()
        self._stopping = threading.Event()
        self._drain_until = 0.0            # close(): the publisher sends what is queued until then
        self._retained = {}                # topic -> last payload sent (publisher thread only)
        self.published, self.failed, self.connects = 0, 0, 0
        self._thread = threading.Thread(target=self._publish_loop, name="mqtt-publisher", daemon=True)

    # ------------------------------------------------------------------ paho's thread

    def _on_connect(self, client, userdata, flags, rc, *properties):
        failed, text = _reason(rc)
        if failed:
            self._refused = text
            if self._answer.is_set():  # at start, start() says it (one line, exit 2)
                log.warning("mqtt: the broker %s:%d refused the connection (%s)", self._settings.host,
                            self._settings.port, text)
        else:
            self.connects += 1
            client.subscribe("{}/status".format(self._settings.discovery_prefix))
            self._birth_due.set()
            self._connected.set()
            log.info("mqtt: connected to %s:%d", self._settings.host, self._settings.port)
        self._answer.set()

    def _on_disconnect(self, client, userdata, *args):
        was_connected = self._connected.is_set()  # not after a refused CONNECT
        self._connected.clear()
        failed, text = _reason(args[0] if len(args) == 1 else args[1])
        if failed and was_connected and not self._stopping.is_set():
            log.warning("mqtt: lost the broker %s:%d (%s); reconnecting with backoff", self._settings.host,
                        self._settings.port, text)

    def _on_message(self, client, userdata, message):
        # Home Assistant (re)started: send the configs again. A retained "online" is an old one
        # (HA's birth message is not retained by default), and the connect's birth covers it.
        if message.payload == ONLINE.encode() and not message.retain:
            self._birth_due.set()

    # ------------------------------------------------------------------ start and stop

    def start(self):
        """Connects, then starts paho's loop and the publisher.

        Raises:
          UserError: the broker cannot be reached (unless wait_for_broker), does not answer within
            connect_timeout_s, refuses the login, or fails the TLS handshake.
        """
        s = self._settings
        try:
            self._client.connect(s.host, s.port, s.keepalive_s)
        except OSError as e:  # refused, unknown host, timeout, TLS handshake (ssl.SSLError)
            self._unreachable(e)
            self._answer.set()  # wait_for_broker: nothing to wait for now
        self._client.loop_start()
        self._thread.start()
        if not self._answer.wait(s.connect_timeout_s) and not s.wait_for_broker:
            self.close()
            raise UserError("mqtt.host/mqtt.port {}:{}: no answer from the broker within {:g} s (mqtt.connect_timeout_s)"
                            .format(s.host, s.port, s.connect_timeout_s))
        if self._refused is not None:
            self.close()
            raise UserError("mqtt: the broker {}:{} refused the login ({}). Check mqtt.username and "
                            "mqtt.password_file / mqtt.password_env".format(s.host, s.port, self._refused))
        return self

    def _unreachable(self, error):
        """A failed first connect: UserError, or (wait_for_broker) retries in the background."""
        s = self._settings
        if isinstance(error, ssl.SSLError):  # a certificate does not fix itself: never worth waiting for
            raise UserError("mqtt.tls: the TLS handshake with {}:{} failed ({}). Check mqtt.tls.ca_certs (the CA "
                            "that signed the broker's certificate), certfile and keyfile, or mqtt.tls.insecure for "
                            "a certificate made for another host name".format(s.host, s.port, error))
        if not s.wait_for_broker:
            raise UserError("mqtt.host/mqtt.port {}:{}: cannot connect to the broker ({}). Start the broker, fix the "
                            "address, or set mqtt.wait_for_broker: true to start anyway and keep retrying"
                            .format(s.host, s.port, error))
        log.warning("mqtt.host/mqtt.port %s:%d: cannot connect to the broker (%s); retrying in the background",
                    s.host, s.port, error)
        self._client.connect_async(s.host, s.port, s.keepalive_s)

    def close(self, timeout=CLOSE_S):
        """Sends what is queued (within `timeout`), "offline", disconnects; never blocks longer."""
        deadline = time.monotonic() + timeout
        self._drain_until = deadline - timeout / 2  # half for the queue, half for "offline" and paho
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._connected.is_set():
            info = self._client.publish(self._availability, OFFLINE, qos=self._settings.qos, retain=True)
            while not info.is_published() and self._connected.is_set() and time.monotonic() < deadline:
                time.sleep(0.01)
        self._client.disconnect()
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()  # paho may sit in a connect attempt: bounded here, daemon otherwise
        stopper.join(max(0.0, deadline - time.monotonic()))

    # ------------------------------------------------------------------ the publisher thread

    def counters(self):
        """{"connected", "published", "dropped", "superseded", "queued", "reconnects"} now."""
        return {"connected": self._connected.is_set(), "published": self.published,
                "dropped": self._outbox.dropped + self.failed, "superseded": self._outbox.superseded,
                "queued": len(self._outbox), "reconnects": max(0, self.connects - 1)}

    def _publish_loop(self):
        reported = None
        while not self._stopping.is_set() or (self._connected.is_set() and len(self._outbox)
                                              and time.monotonic() < self._drain_until):
            if self._connected.wait(POLL_S):
                if self._birth_due.is_set():
                    self._send_birth()
                message = self._outbox.take(POLL_S)
                if message is not None:
                    self._send(message.topic, message.payload, message.retain)
            counters = self.counters()
            if counters != reported:
                self._report(counters)
                reported = counters
        self._report(self.counters())

    def _send_birth(self):
        self._birth_due.clear()
        self._send(self._availability, ONLINE, True, remember=False)
        for topic, payload in self._birth():
            self._send(topic, payload, True, remember=False)
        for topic, payload in list(self._retained.items()):
            self._send(topic, payload, True)

    def _send(self, topic, payload, retain, remember=True):
        """Publishes one message; a retained one is remembered for the next birth."""
        if callable(payload):
            payload = payload()
        info = self._client.publish(topic, payload, qos=self._settings.qos, retain=retain)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            self.failed += 1
            return
        self.published += 1
        if retain and remember:
            self._retained[topic] = payload
