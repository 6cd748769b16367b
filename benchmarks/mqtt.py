"""Output-thread cost of the MQTT sink per frame: 640x480 frames with 6 tracked objects (issue 15, item 4).

The sink is the app's (app.outputs.mqtt.sink, discovery and snapshots on), connected through the app's
MqttClient to a real mosquitto started here on a free loopback port (anonymous, no persistence).
Each frame carries 6 objects of the demo model's 3 labels moving across the frame with noisy
scores (so counts change now and then and a better score queues a snapshot), and one frame in
ten carries an object event, about what a busy camera makes. Frames are fed at --fps, so the
publisher thread (JPEG encode, paho) keeps up and runs meanwhile, as in the app. Timed is what
the output thread runs: `write(result)` and `object_events(events)`. Then the broker is killed
and the same frames run again: the outbox (100 events here) fills and drops the oldest, and the
output-thread cost must not grow.

    python -m benchmarks.mqtt [--frames 1500] [--fps 100]

Prints mean, median and 99th percentile microseconds per frame with the broker up and down,
what was published and dropped, and the mean JPEG encode time of a snapshot (publisher thread).
"""

import argparse
import os
import shutil
import socket
import subprocess
import tempfile
import time

import numpy as np

from app.config import MqttConfig, build
from app.outputs.mqtt.sink import MqttSink, encode_snapshot
from app.outputs.mqtt.client import MqttClient
from app.pipeline.threads import FrameResult
from app.tracking.objects import ObjectFrame

WIDTH, HEIGHT, OBJECTS = 640, 480, 6
LABELS = ("circle", "square", "triangle")
SOURCE = "synthetic:640x480@30"


def start_broker(folder):
    """mosquitto on a loopback port free now (anonymous, no persistence): (process, port)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conf = os.path.join(folder, "mosquitto.conf")
    with open(conf, "w") as f:
        f.write("listener {} 127.0.0.1\nallow_anonymous true\npersistence false\n".format(port))
    proc = subprocess.Popen(["mosquitto", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return proc, port


def frames(count, seed=0):
    """(FrameResult, events) pairs: 6 objects drifting across a 640x480 frame, noisy scores."""
    rng = np.random.RandomState(seed)
    image = rng.randint(0, 255, (HEIGHT, WIDTH, 3)).astype(np.uint8)
    start = rng.uniform([0, 0], [WIDTH - 120, HEIGHT - 120], (OBJECTS, 2))
    velocity = rng.uniform(-2, 2, (OBJECTS, 2))
    top = np.zeros(OBJECTS)
    for i in range(count):
        xy = np.mod(start + velocity * i, [WIDTH - 120, HEIGHT - 120])
        scores = np.clip(rng.normal(0.75, 0.08, OBJECTS), 0.4, 0.99)
        top = np.maximum(top, scores)
        objects = [{"id": k + 1, "source": SOURCE, "label": LABELS[k % 3] if rng.rand() > 0.01 else LABELS[0],
                    "score": round(float(scores[k]), 4), "top_score": round(float(top[k]), 4),
                    "box": [float(xy[k, 0]), float(xy[k, 1]), float(xy[k, 0] + 120), float(xy[k, 1] + 120)],
                    "area": 14400.0, "current_zones": [], "entered_zones": []} for k in range(OBJECTS)]
        objects = objects[:OBJECTS - 1] if i % 97 < 5 else objects  # one leaves view now and then
        events = [dict(objects[i % len(objects)], type="object", event="update", time=i / 30.0)] if i % 10 == 0 else []
        result = FrameResult(SOURCE, i, SOURCE, i / 30.0, image, image, None, None, None, "int8", {},
                             ObjectFrame(objects, [], None, events))
        yield result, events


def run(sink, pairs, fps):
    """Microseconds of write + object_events per frame, frames paced at `fps`."""
    costs = np.empty(len(pairs))
    start = time.perf_counter()
    for i, (result, events) in enumerate(pairs):
        time.sleep(max(0.0, start + i / fps - time.perf_counter()))
        t0 = time.perf_counter()
        sink.write(result)
        sink.object_events(events)
        costs[i] = (time.perf_counter() - t0) * 1e6
    return costs


def describe(name, costs, client):
    c = client.counters()
    print("{:12s} mean {:6.1f} us  median {:6.1f} us  p99 {:6.1f} us per frame | published {} dropped {} "
          "superseded {}".format(name, costs.mean(), np.median(costs), np.percentile(costs, 99), c["published"],
                                 c["dropped"], c["superseded"]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=1500, help="frames per phase (broker up, broker down)")
    parser.add_argument("--fps", type=float, default=100.0, help="frame rate the output thread is fed at")
    args = parser.parse_args()
    if not shutil.which("mosquitto"):
        raise SystemExit("mosquitto is not installed (apt-get install mosquitto)")
    folder = tempfile.mkdtemp(prefix="mqtt-bench-")
    broker, port = start_broker(folder)
    settings = build(MqttConfig, {"enabled": True, "host": "127.0.0.1", "port": port, "outbox_size": 100}, "bench")
    sink = MqttSink(settings, {SOURCE: ("synthetic_640x480_30", list(LABELS))}, {l: i for i, l in enumerate(LABELS)},
                    "int8")
    client = MqttClient(settings, "", "edgedet-bench", sink.available, sink.outbox, sink.birth, lambda c: None)
    sink.attach(client.start())
    pairs = list(frames(args.frames))
    try:
        print("{} frames {}x{} at {:g} fps, {} objects, one event per 10 frames".format(
            args.frames, WIDTH, HEIGHT, args.fps, OBJECTS))
        describe("broker up", run(sink, pairs, args.fps), client)
        broker.kill()
        broker.wait()
        time.sleep(0.5)
        describe("broker down", run(sink, pairs, args.fps), client)
        t0 = time.perf_counter()
        for k in range(20):
            encode_snapshot(pairs[0][0].raw, [10.0, 10.0, 130.0, 130.0], 0, "circle", 0.9, settings.snapshot_quality)
        print("snapshot JPEG encode (publisher thread): {:.2f} ms".format((time.perf_counter() - t0) / 20 * 1e3))
    finally:
        sink.close()
        if broker.poll() is None:
            broker.kill()
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
