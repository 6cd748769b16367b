"""Training throughput: images/s of float and quantization-aware train steps.

Runs the real input pipeline (synthetic scenes in memory, flip + crop, targets)
and the compiled train step of training.train at the demo settings (192x224,
depth multiplier 0.5, batch 8 by default). A benchmark, not a test.

  .venv/bin/python benchmarks/train_speed.py [--steps 200] [--height 192 --width 224]
"""

import argparse
import os
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


def measure(train_steps, iterator, steps, batch_size, chunk=10):
    """Images/s over `steps` steps, after untimed calls that trace and warm up (tf.data's
    autotuner settles its parallelism over the first few dozen steps)."""
    for _ in range(3):
        float(train_steps(iterator, tf.constant(chunk))["loss"])
    start = time.perf_counter()
    done = 0
    while done < steps:
        out = train_steps(iterator, tf.constant(chunk))
        done += chunk
    float(out["loss"])  # wait for the last step
    return done * batch_size / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=192)
    parser.add_argument("--width", type=int, default=224)
    parser.add_argument("--depth", type=float, default=0.5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    cfg = training_config.load_config()
    cfg = replace(cfg, model=replace(cfg.model, input_height=args.height, input_width=args.width,
                                     depth_multiplier=args.depth))
    anchors = app_anchors.anchors_from_config(cfg.model)
    decoded = synthetic_decoded(64, 240, 280)
    ds = pipeline.train_dataset(decoded, cfg, anchors, args.batch, cache=True)
    strategy = tf.distribute.get_strategy()
    iterator = iter(strategy.experimental_distribute_dataset(ds))
    model = ssd_model.build_ssd(cfg.model)
    results = {}
    for phase in ("float", "qat"):
        if phase == "qat":
            model = trainer.quantize(model)
        step = trainer.make_train_step(model, trainer.make_optimizer(cfg.train), strategy, cfg.train)
        results[phase] = measure(step, iterator, args.steps, args.batch)
        print("{:5s} {:6.1f} images/s  {:6.1f} ms/step  ({}x{}, depth {}, batch {})".format(
            phase, results[phase], 1000.0 * args.batch / results[phase], args.height, args.width,
            args.depth, args.batch), flush=True)
    print("QAT step / float step: {:.2f}x".format(results["float"] / results["qat"]))


if __name__ == "__main__":
    main()
