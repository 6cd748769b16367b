"""Training throughput: images/s of float and quantization-aware train steps.

Runs the real input pipeline (synthetic scenes in memory, flip + crop, targets)
and the compiled train step of training.train at the demo settings (192x224,
depth multiplier 0.5, batch 8 by default). A benchmark, not a test.

  .venv/bin/python benchmarks/train_speed.py [--steps 200] [--height 192 --width 224] [--cpu-replicas N] [--trace DIR]

The steps run as the trainer runs them: on the CPU replicas `distribute.cpu_replicas` asks for
(training/cpu_replicas.py; --cpu-replicas 1 for one), the float step with its 1x1 convolutions'
gradients as MatMuls (training/conv_gradients.py), then with TensorFlow's own convolution
gradients, one after the other.
--trace records a tf.profiler trace of 20 float steps (as trained) into DIR (TensorBoard's profile
plugin reads it) and prints where their time goes: op self time per step by part
of the step (forward and backward of the backbone, extra layers and heads; the L2
regularization, the optimizer, the loss and the rest; the input pipeline's GetNext)
and the slowest model layers. The edgedet-vs-OD API figures are benchmarks/odapi_train_speed.py's.
"""

import argparse
import collections
import glob
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from app.model import anchors as app_anchors  # noqa: E402
from app.capture import synthetic  # noqa: E402
from training import config as training_config  # noqa: E402
from training import distribute  # noqa: E402
from training import model as ssd_model  # noqa: E402
from training import train as trainer  # noqa: E402
from training.data import pipeline  # noqa: E402

replace = training_config.app_config.replace


def synthetic_decoded(count, height, width, seed=0):
    """`count` synthetic scenes as a decoded dataset (RGB uint8 images, boxes, classes)."""
    rng = np.random.RandomState(seed)
    scenes = [synthetic.render_scene(rng, height, width) for _ in range(count)]
    images = np.stack([s[0][..., ::-1] for s in scenes])
    boxes = tf.ragged.constant([s[1].tolist() for s in scenes], ragged_rank=1, inner_shape=(4,),
                               dtype=tf.float32)
    classes = tf.ragged.constant([s[2].tolist() for s in scenes], dtype=tf.int32)
    ds = tf.data.Dataset.from_tensor_slices({"image": images, "boxes": boxes, "classes": classes})
    return ds.map(lambda e: {"image": e["image"], "boxes": e["boxes"], "classes": e["classes"]})


def warm_up(train_steps, iterator, chunk):
    """Untimed calls that trace and warm up (tf.data's autotuner settles its parallelism over the
    first few dozen steps)."""
    for _ in range(3):
        float(train_steps(iterator, tf.constant(chunk))["loss"])


def measure(train_steps, iterator, steps, batch_size, chunk=10):
    """(images/s, CPU ms per step) over `steps` steps after `warm_up`. The CPU time is the whole
    process's (every thread), which moves less than the wall time on a shared host."""
    warm_up(train_steps, iterator, chunk)
    start, cpu = time.perf_counter(), time.process_time()
    done = 0
    while done < steps:
        out = train_steps(iterator, tf.constant(chunk))
        done += chunk
    float(out["loss"])  # wait for the last step
    return done * batch_size / (time.perf_counter() - start), 1000.0 * (time.process_time() - cpu) / done


def op_part(name, op_type, model_name):
    """(part of the step, model layer or None) of one traced op, from its name scope."""
    backward = "gradient_tape/" in name
    scopes = [p for p in re.sub(r"(while/body/_\d+/|while/|gradient_tape/)", "", name).split("/") if p]
    if "Regularizer" in name or op_type == "L2Loss":
        return "L2 regularization", None
    if "SGD" in scopes or op_type.startswith("ResourceApply"):
        return "optimizer", None
    if "Iterator" in op_type or "Iterator" in name:
        return "input (GetNext)", None
    if len(scopes) < 2 or scopes[0] != model_name:
        return "loss and the rest" + (" bwd" if backward else " fwd"), None
    layer = scopes[1]
    if layer.startswith("BoxPredictor") or layer in ("box_encodings", "class_logits"):
        part = "heads"
    else:
        part = "extra layers" if layer.startswith("layer_") else "backbone"
    return part + (" bwd" if backward else " fwd"), layer


def framework_ops(logdir):
    """Rows (dicts: operation, type, total_self_time in us) of the trace's framework op stats."""
    from tensorflow.python.profiler.internal import _pywrap_profiler_plugin as profiler
    files = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
    data, converted = profiler.xspace_to_tools_data(files, "framework_op_stats", {})
    if not converted:
        raise RuntimeError("the profiler could not read the trace in {}".format(logdir))
    table = json.loads(data)[0]
    ids = [c["id"] for c in table["cols"]]
    return [dict(zip(ids, [c.get("v") for c in row["c"]])) for row in table["rows"]]


def print_breakdown(rows, model_name, steps):
    """Prints op self time (ms per step) by part of the step and the 5 slowest model layers (fwd + bwd)."""
    parts, layers = collections.Counter(), collections.Counter()
    for row in rows:
        if row["type"] == "IDLE":
            continue
        part, layer = op_part(row["operation"], row["type"], model_name)
        ms = row["total_self_time"] / 1000.0 / steps
        parts[part] += ms
        if layer:
            layers[layer] += ms
    busy = sum(parts.values())
    print("op self time {:.1f} ms/step, summed over threads (preempted time included on a busy host)".format(busy))
    for part, ms in parts.most_common():
        print("  {:26s} {:6.1f} ms/step {:5.1f}%".format(part, ms, 100.0 * ms / busy))
    print("slowest layers: " + ", ".join("{} {:.1f}".format(k, v) for k, v in layers.most_common(5)))


def trace(train_steps, iterator, logdir, model_name, chunk=10, calls=2):
    """Traces `calls` x `chunk` warm train steps into `logdir` and prints their breakdown."""
    warm_up(train_steps, iterator, chunk)
    tf.profiler.experimental.start(logdir)
    for _ in range(calls):
        out = train_steps(iterator, tf.constant(chunk))
    float(out["loss"])
    tf.profiler.experimental.stop()
    print_breakdown(framework_ops(logdir), model_name, chunk * calls)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--depth", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--cpu-replicas", help="distribute.cpu_replicas (default: config.yaml's)")
    parser.add_argument("--trace", help="folder for a profiler trace of the float step (then only that runs)")
    args = parser.parse_args()
    cfg = training_config.load_config()
    cfg = replace(cfg, model=replace(cfg.model, input_height=args.height, input_width=args.width,
                                     depth_multiplier=args.depth),
                  distribute=replace(cfg.distribute, cpu_replicas=args.cpu_replicas or cfg.distribute.cpu_replicas))
    strategy = distribute.choose_strategy(cfg.distribute, replace(cfg.train, batch_size=args.batch))  # before TF starts
    anchors = app_anchors.anchors_from_config(cfg.model)
    decoded = synthetic_decoded(64, 240, 280)
    ds = pipeline.train_dataset(decoded, cfg, anchors, args.batch, cache=True)
    iterator = iter(strategy.experimental_distribute_dataset(ds))
    with strategy.scope():
        model = ssd_model.build_ssd(cfg.model)
    results = {}
    setting = "{}x{}, depth {}, batch {}, {} replica(s)".format(
        args.height, args.width, args.depth, args.batch, strategy.num_replicas_in_sync)
    # The float step as the trainer runs it (MatMul gradients), then with TF's own conv gradients.
    for phase, matmul_gradients in (("float", True), ("float, TF's conv gradients", False), ("qat", False)):
        with strategy.scope():
            model = trainer.quantize(model) if phase == "qat" else model
            optimizer = trainer.make_optimizer(cfg.train)
        step = trainer.make_train_step(model, optimizer, strategy, cfg.train, matmul_gradients=matmul_gradients)
        if args.trace:
            return trace(step, iterator, args.trace, model.name)
        results[phase] = measure(step, iterator, args.steps, args.batch)
        print("{:27s} {:6.1f} images/s  {:6.1f} ms/step  CPU {:6.1f} ms/step  ({})".format(
            phase, results[phase][0], 1000.0 * args.batch / results[phase][0], results[phase][1], setting),
            flush=True)
    tf_float = results["float, TF's conv gradients"]
    print("MatMul gradients against TF's: speed-up {:.2f}x wall, {:.2f}x CPU".format(
        results["float"][0] / tf_float[0], tf_float[1] / results["float"][1]))
    print("QAT step / float step: {:.2f}x".format(results["float"][0] / results["qat"][0]))


if __name__ == "__main__":
    main()
