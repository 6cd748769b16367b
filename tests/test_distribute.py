"""MirroredStrategy over 2 logical CPU devices computes the single-device train steps.

Logical devices must be configured before TensorFlow initialises, so the comparison runs
in a fresh interpreter. Batch-norm statistics are per replica (as on several GPUs), so the
global batch is [a, b, c, d, a, b, c, d]: each replica then sees [a, b, c, d], whose batch
statistics equal the global batch's, and the test isolates what the strategy must get right,
namely the gradient all-reduce, the global match-count normalization, the regularization
share and the optimizer update (two steps, so momentum and the step counter count too).

It runs in float64. In float32 this tiny network's step is ill-conditioned: merely reversing
the order of the images in a single-device batch moved the updated weights by ~2% of the
update (relative norm), as much as the strategy did. In float64 both differences are ~1e-14,
so the test can demand agreement to 1e-9, where a missing all-reduce or a per-replica
normalization would be off by 50% or more.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = textwrap.dedent("""
    import json, os
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import tf_keras
    tf_keras.backend.set_floatx("float64")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
    from app import anchors as app_anchors, synthetic
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

    def f64(t):
        return tf.cast(t, tf.float64) if t.dtype.is_floating else t

    pairs = []
    for _ in range(4):
        image, boxes, classes = synthetic.render_scene(rng, 96, 96)
        x, y = make({"image": image[..., ::-1], "boxes": boxes, "classes": classes}, None)
        pairs.append((f64(x), {k: f64(v) for k, v in y.items()}))
    order = [0, 1, 2, 3] * 2
    images = tf.stack([pairs[i][0] for i in order])
    targets = {k: tf.stack([pairs[i][1][k] for i in order]) for k in pairs[0][1]}
    initial = build_ssd(cfg.model).get_weights()

    def run(strategy):
        with strategy.scope():
            model = build_ssd(cfg.model)
            model.set_weights(initial)
            optimizer = trainer.make_optimizer(cfg.train)
        step = trainer.make_train_step(model, optimizer, strategy, cfg.train)
        ds = tf.data.Dataset.from_tensors((images, targets)).repeat()
        parts = step(iter(strategy.experimental_distribute_dataset(ds)), tf.constant(2))
        return [w.numpy() for w in model.weights], {k: float(v) for k, v in parts.items()}

    single, single_loss = run(tf.distribute.OneDeviceStrategy("/cpu:0"))
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    mirrored, mirrored_loss = run(mirrored_strategy)
    # Moving variances are left out: Keras updates them with the unbiased (n / (n - 1)) batch
    # variance, and n is the per-replica element count, so they differ by design.
    names = [w.name for w in build_ssd(cfg.model).weights]
    kept = [i for i, n in enumerate(names) if "moving_variance" not in n]
    print(json.dumps({
        "replicas": mirrored_strategy.num_replicas_in_sync, "compared": len(kept),
        "dtypes": sorted({str(single[i].dtype) for i in kept}),
        "rel_diff": float(np.sqrt(sum(((single[i] - mirrored[i]) ** 2).sum() for i in kept))
                          / np.sqrt(sum(((single[i] - initial[i]) ** 2).sum() for i in kept))),
        "max_weight_diff": max(float(np.abs(single[i] - mirrored[i]).max()) for i in kept),
        "max_update": max(float(np.abs(single[i] - initial[i]).max()) for i in kept),
        "single_loss": single_loss, "mirrored_loss": mirrored_loss}))
""")


@pytest.mark.slow  # a TensorFlow start-up and three model builds: about 1.5 minutes
def test_mirrored_two_cpus_equals_single_device():
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(json.dumps(result))  # the figures, with pytest -s
    assert result["replicas"] == 2 and result["dtypes"] == ["float64"]
    # Two SGD steps really moved the weights, and both strategies moved them the same way:
    # measured relative difference 4e-14 (float64 rounding).
    assert result["compared"] > 200
    assert result["max_update"] > 1e-3
    assert result["rel_diff"] < 1e-9
    assert result["max_weight_diff"] < 1e-9 * result["max_update"]
    for key in ("loss", "classification", "localization", "regularization"):
        assert result["mirrored_loss"][key] == pytest.approx(result["single_loss"][key], rel=1e-9)
