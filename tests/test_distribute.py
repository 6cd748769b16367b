"""MirroredStrategy over 2 logical CPU devices computes the single-device train steps, float and QAT.

Logical devices must be configured before TensorFlow initialises, so the comparison runs
in a fresh interpreter. Batch-norm statistics are per replica (as on several GPUs), so the
global batch is [a, b, c, d, a, b, c, d]: each replica then sees [a, b, c, d], whose batch
statistics equal the global batch's, and the test isolates what the strategy must get right,
namely the gradient all-reduce, the global match-count normalization, the regularization
share and the optimizer update (two steps, so momentum and the step counter count too).

The float run is in float64. In float32 this tiny network's step is ill-conditioned: merely reversing
the order of the images in a single-device batch moved the updated weights by ~2% of the
update (relative norm), as much as the strategy did. In float64 both differences are ~1e-14,
so the test can demand agreement to 1e-9, where a missing all-reduce or a per-replica
normalization would be off by 50% or more.

The quantization-aware run must be float32 (tfmot's FakeQuantWithMinMaxVars has no float64
kernel), so it is held to a measured float32 noise floor instead: the same single-device steps
on the batch in reverse order. It also compares tfmot's fake-quant ranges (the `*_min` / `*_max`
variables): activation ranges move by an all-reduced moving average (the mean of the replicas'
batch min/max), weight ranges follow the all-reduced update of their kernels.
"""

import json
import os
import re
import subprocess
import sys
import textwrap
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json, os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import tf_keras
    phase = sys.argv[1]  # float | qat
    # tfmot's FakeQuantWithMinMaxVars exists only in float32.
    dtype = tf.float64 if phase == "float" else tf.float32
    tf_keras.backend.set_floatx(dtype.name)
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from app.model import anchors as app_anchors
    from app.capture import synthetic
    from training import train as trainer
    from training.config import app_config, load_config
    from training.data import pipeline
    from training.model import build_ssd

    R = app_config.replace
    cfg = load_config()
    # Two feature maps (6x6, 3x3): a 1x1 map would normalize 2 samples per replica to exactly
    # +-1, whose true gradient is 0 and whose computed one is amplified rounding noise.
    anchors_cfg = R(cfg.model.anchors, num_layers=2)
    cfg = R(cfg, model=R(cfg.model, input_height=96, input_width=96, depth_multiplier=0.35,
                         anchors=anchors_cfg),
            train=R(cfg.train, warmup_steps=1, warmup_learning_rate=1e-2, learning_rate_base=1e-2,
                    quantization=R(cfg.train.quantization, enabled=False)))
    anchors = app_anchors.anchors_from_config(cfg.model)
    make = pipeline.make_example_fn(cfg, anchors, augment=False)
    rng = np.random.RandomState(4)

    def cast(t):
        return tf.cast(t, dtype) if t.dtype.is_floating else t

    pairs = []
    for _ in range(4):
        image, boxes, classes = synthetic.render_scene(rng, 96, 96)
        x, y = make({"image": image[..., ::-1], "boxes": boxes, "classes": classes}, None)
        pairs.append((cast(x), {k: cast(v) for k, v in y.items()}))
    initial = build_ssd(cfg.model).get_weights()

    def run(strategy, order=(0, 1, 2, 3)):
        images = tf.stack([pairs[i][0] for i in order * 2])
        targets = {k: tf.stack([pairs[i][1][k] for i in order * 2]) for k in pairs[0][1]}
        with strategy.scope():
            model = build_ssd(cfg.model)
            model.set_weights(initial)
            if phase == "qat":
                model = trainer.quantize(model)
            optimizer = trainer.make_optimizer(cfg.train)
        before = [w.numpy() for w in model.weights]
        # As the trainer does: the float phase with its 1x1 convolutions' MatMul gradients.
        step = trainer.make_train_step(model, optimizer, strategy, cfg.train,
                                       matmul_gradients=phase == "float")
        ds = tf.data.Dataset.from_tensors((images, targets)).repeat()
        parts = step(iter(strategy.experimental_distribute_dataset(ds)), tf.constant(2))
        names = [w.name for w in model.weights]
        return (names, before, [w.numpy() for w in model.weights],
                {k: float(v) for k, v in parts.items()})

    names, start, single, single_loss = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    _, _, mirrored, mirrored_loss = run(mirrored_strategy)
    # The float32 noise floor: the same single-device steps on the batch in reverse order.
    reordered, reordered_loss = single, single_loss
    if phase == "qat":
        _, _, reordered, reordered_loss = run(tf.distribute.OneDeviceStrategy("/cpu:0"), (3, 2, 1, 0))

    def rel_diff(a, b, where):
        return float(np.sqrt(sum(((a[i] - b[i]) ** 2).sum() for i in where))
                     / max(np.sqrt(sum(((a[i] - start[i]) ** 2).sum() for i in where)), 1e-30))
    # Moving variances are left out: Keras updates them with the unbiased (n / (n - 1)) batch
    # variance, and n is the per-replica element count, so they differ by design.
    kept = [i for i, n in enumerate(names) if "moving_variance" not in n]
    ranges = [i for i, n in enumerate(names) if n.endswith(("_min:0", "_max:0"))]
    # Activation ranges (moving averages of batch min/max), not the kernels' last-value ranges.
    activation_ranges = [i for i in ranges if "kernel" not in names[i]]

    def max_diff(a, b, where):
        return max([float(np.abs(a[i] - b[i]).max()) for i in where] or [0.0])

    print(json.dumps({
        "ranges": len(ranges), "activation_ranges": len(activation_ranges),
        "max_range_update": max_diff(single, start, ranges),
        "max_activation_range_update": max_diff(single, start, activation_ranges),
        "range_rel_diff": rel_diff(single, mirrored, ranges),
        "activation_range_rel_diff": rel_diff(single, mirrored, activation_ranges),
        "reorder_activation_range_rel_diff": rel_diff(single, reordered, activation_ranges),
        "replicas": mirrored_strategy.num_replicas_in_sync, "compared": len(kept),
        "dtypes": sorted({str(single[i].dtype) for i in kept}),
        "rel_diff": rel_diff(single, mirrored, kept),
        "reorder_rel_diff": rel_diff(single, reordered, kept),
        "max_weight_diff": max_diff(single, mirrored, kept),
        "max_update": max_diff(single, start, kept), "single_loss": single_loss,
        "mirrored_loss": mirrored_loss, "reordered_loss": reordered_loss}))
""")


def _run(phase):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, phase], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result))  # the figures, with pytest -s
    return result


def _assert_moved(result):
    assert result["replicas"] == 2
    # Two SGD steps really moved the weights (a broken all-reduce or a per-replica
    # normalization would leave them 50% or more apart).
    assert result["compared"] > 200
    assert result["max_update"] > 1e-3


@pytest.mark.slow  # a TensorFlow start-up and three model builds: about 1.5 minutes
def test_mirrored_two_cpus_equals_single_device():
    result = _run("float")
    _assert_moved(result)
    assert result["dtypes"] == ["float64"] and result["ranges"] == 0
    # Measured relative difference 4e-14 (float64 rounding).
    assert result["rel_diff"] < 1e-9
    assert result["max_weight_diff"] < 1e-9 * result["max_update"]
    for key in ("loss", "classification", "localization", "regularization"):
        assert result["mirrored_loss"][key] == pytest.approx(result["single_loss"][key], rel=1e-9)


def test_mirrored_two_cpus_equals_single_device_quantization_aware():
    """In float32 (fake quantization has no float64 kernel), against a measured noise floor.

    The floor is the single-device run on the same batch in reverse order. Measured: weights
    0.16-0.17% apart (relative to the update) against a floor of 0.16-0.17%; activation ranges
    0.5% against 0.4%; the second step's loss parts 0.04-1.7% apart against 0.5-1.2% for the
    reversed batch (a per-replica normalization would be 2x off).
    """
    result = _run("qat")
    _assert_moved(result)
    assert result["dtypes"] == ["float32", "int32"]  # int32: tfmot's optimizer_step
    assert result["rel_diff"] < min(0.01, 3 * result["reorder_rel_diff"])
    # Every quantized layer has ranges; all of them moved, and alike on one and on two replicas.
    assert result["ranges"] > 100 and result["activation_ranges"] > 50
    assert result["max_range_update"] > 1.0  # kernel ranges: from the initial +-6 to the kernels
    assert result["max_activation_range_update"] > 1e-3
    assert result["range_rel_diff"] < 0.01
    assert result["activation_range_rel_diff"] < min(
        0.01, 3 * result["reorder_activation_range_rel_diff"])
    for key in ("loss", "classification", "localization"):
        assert result["mirrored_loss"][key] == pytest.approx(result["single_loss"][key], rel=5e-2)


# The step watchdog (the bound on a stuck peer) ends its process, so it runs in one of its own.
WATCHDOG_SCRIPT = textwrap.dedent("""
    import time
    from training.distribute import StepWatchdog
    marks = {}
    stopped = StepWatchdog(lambda s, k: "stopped one fired", poll_s=0.02)
    stopped.expect(0.1, "a")
    stopped.stop()  # done in time: its deadline no longer counts
    watchdog = StepWatchdog(lambda s, k: "late {:g} {} after {:.3f} s".format(
        s, k, time.monotonic() - marks["b"]), poll_s=0.02)
    for _ in range(10):  # calls that end within their bound
        watchdog.expect(2.0, "a")
        time.sleep(0.05)
    print("in time", flush=True)
    marks["b"] = time.monotonic()
    watchdog.expect(0.2, "b")
    time.sleep(20)  # a call that never ends
    print("still running")
""")


def test_step_watchdog_ends_the_process_with_one_line_once_a_call_outlives_its_bound():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", WATCHDOG_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout == "in time\n"
    last = proc.stderr.strip().splitlines()[-1]
    assert "stopped one fired" not in proc.stderr
    match = re.fullmatch(r"late 0.2 b after (\S+) s", last)
    assert match, last
    # Ends after its bound, within a few polls (more on a loaded host).
    assert 0.2 <= float(match.group(1)) < 1.5


# The join guard, around a call that holds the GIL as TensorFlow's cluster join does (a C loop).
JOIN_GUARD_SCRIPT = textwrap.dedent("""
    from training.join_guard import JoinGuard
    with JoinGuard(5.0, "in-time guard fired"):
        pass
    print("in time", flush=True)
    with JoinGuard(0.5, "late line"):
        sum(range(10 ** 12))  # minutes of C, GIL held
    print("still running")
""")


def test_join_guard_ends_a_call_that_holds_the_gil_with_its_line_and_exit_1():
    env = dict(os.environ, PYTHONPATH=ROOT)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", JOIN_GUARD_SCRIPT], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    took = time.monotonic() - start
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert proc.stdout == "in time\n"
    assert proc.stderr == "late line\n"  # no traceback: faulthandler's goes to /dev/null
    assert took < 30  # 0.5 s bound + 1 s grace + start-up, on a loaded host


@pytest.mark.parametrize("key", ["peer_timeout_s", "startup_timeout_s", "join_timeout_s"])
def test_distribute_bounds_must_be_positive(key):
    from app.errors import UserError
    from training.config import DistributeConfig
    from training.distribute import check_config
    check_config(DistributeConfig(), 8)
    with pytest.raises(UserError, match=r"distribute\.{}: expected > 0 seconds, got 0".format(key)):
        check_config(DistributeConfig(**{key: 0}), 8)
