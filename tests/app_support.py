"""Shared helpers for the app's process-level tests.

- `reference_bundles`: the real tiny bundle (tests/tiny_bundle.py) with sample images
  ("good"), and the same bundle whose model_int8.tflite was made the way the user made
  theirs ("broken"): the float network's SavedModel converted full-integer with raw 0..255
  float32 images as representative data. Built once per session.
- `start_app` / `stop_app`: `python -m app` as a real subprocess.
- `cpu_worker`: a bundle's model on the CPU, wired as the app wires it, with `THRESHOLDS`.
- `free_port`, `wait_for`.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import ROOT

NUM_SAMPLES = 4
THRESHOLDS = {"score_threshold": 0.4, "iou_threshold": 0.6, "max_detections": 5, "max_detections_per_class": 3}


def cpu_worker(bundle_dir, precision="int8"):
    """app.pipeline.threads.Worker of the bundle's `precision` model on one CPU thread."""
    from app.inference import live_model, runtime
    from app.model.bundle import load_bundle
    bundle = load_bundle(bundle_dir)
    engine, key = runtime.open_bundle_engine(bundle, "cpu", precision, num_threads=1)
    return live_model.bundle_worker(engine, bundle, key, THRESHOLDS)


def write_samples(folder, count=NUM_SAMPLES, seed=11):
    """Writes `count` synthetic scenes to folder/samples/; returns their bundle-relative names."""
    import cv2
    from app.capture import synthetic
    rng = np.random.RandomState(seed)
    os.makedirs(os.path.join(folder, "samples"))
    names = []
    for i in range(count):
        image, _, _ = synthetic.render_scene(rng, 240, 320)
        name = "samples/{}.jpg".format(i)
        assert cv2.imwrite(os.path.join(folder, name), image)
        names.append(name)
    return names


def raw_pixel_int8(folder):
    """The user's conversion: SavedModel of the bundle's float network, calibrated on raw 0..255 floats."""
    import cv2
    import tensorflow as tf
    import tiny_bundle as tb
    from app.capture import synthetic

    saved = os.path.join(folder, "saved_model")
    tf.saved_model.save(tb._build_keras_model(), saved)  # the same seeded network as model_float.tflite

    def representative():
        rng = np.random.RandomState(5)
        for _ in range(8):
            image, _, _ = synthetic.render_scene(rng, 240, 320)
            rgb = cv2.resize(image[..., ::-1], (tb.WIDTH, tb.HEIGHT)).astype(np.float32)
            yield [rgb[None]]  # float32 0..255: NOT app.model.preprocess

    # edgedet's converter settings are the user's (Optimize.DEFAULT, TFLITE_BUILTINS_INT8, uint8 in
    # and out); only the representative data differs.
    from training.convert_tflite import to_int8_tflite
    return to_int8_tflite(saved, representative)


def build_reference_bundles(tiny, root):
    """{"good": tiny bundle + samples, "broken": the same with the raw-pixel int8} under `root`."""
    good = os.path.join(root, "good")
    shutil.copytree(tiny, good)
    names = write_samples(good)
    meta_path = os.path.join(good, "model.json")
    with open(meta_path) as f:
        meta = json.load(f)
    meta["samples"] = names
    with open(meta_path, "w") as f:
        json.dump(meta, f)
    broken = os.path.join(root, "broken")
    shutil.copytree(good, broken)
    with open(os.path.join(broken, "model_int8.tflite"), "wb") as f:
        f.write(raw_pixel_int8(root))
    return {"good": good, "broken": broken}


_BUILT = {}


@pytest.fixture(scope="session")
def reference_bundles(tiny_bundle, tmp_path_factory):
    """{"good": dir, "broken": dir}; see the module docstring."""
    if "bundles" not in _BUILT:
        _BUILT["bundles"] = build_reference_bundles(tiny_bundle, str(tmp_path_factory.mktemp("reference")))
    return _BUILT["bundles"]


def free_port():
    """A TCP port free on 127.0.0.1 right now."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def wait_for(predicate, timeout, step=0.05):
    """Polls `predicate()` until truthy or `timeout` s; returns its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(step)
        value = predicate()
    return value


def start_app(args, env=None, stdout=subprocess.DEVNULL):
    """`python -m app ARGS` as a real subprocess, headless, stderr to a pipe."""
    full_env = dict(os.environ)
    full_env.pop("DISPLAY", None)
    full_env.update(env or {})
    return subprocess.Popen([sys.executable, "-m", "app"] + list(args), cwd=str(ROOT), env=full_env,
                            stdout=stdout, stderr=subprocess.PIPE, universal_newlines=True)


def stop_app(proc, timeout=10.0):
    """SIGTERM, then wait; returns (exit code, seconds from SIGTERM to exit, stderr text)."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        return None, time.monotonic() - start, err
    return proc.returncode, time.monotonic() - start, err


def read_events(path):
    """Every JSON line of an --events file (a partial last line is skipped)."""
    if not os.path.exists(path):
        return []
    events = []
    with open(path) as f:
        for line in f:
            if line.endswith("\n"):
                events.append(json.loads(line))
    return events
