"""`edgedet-train synth`: write a synthetic 3-class data set laid out like a user's OD API data.

    OUT/train.tfrecord      OD API TFRecord, JPEG quality 95
    OUT/eval.tfrecord       the same format, other images
    OUT/label_map.pbtxt     circle, square, triangle (ids 1..3)
    OUT/eval/               the eval images (the same JPEG bytes) + annotations.json (COCO)

Image i of a split is rendered from its own seed (seed, split, i), so the set is the same
whatever the number of worker processes. Everything is written into a temporary folder that
is renamed to OUT at the end: a half-written set never exists.
"""

import multiprocessing
import os
import shutil
import time

import cv2
import numpy as np

from app import arguments
from app.capture import synthetic
from app.errors import UserError

_SPLIT_IDS = {"train": 1, "eval": 2}
_JPEG_QUALITY = 95
_MARKERS = ("label_map.pbtxt", "train.tfrecord", "eval.tfrecord")


# Allowed values of each number, from the command line or data.synth: (low, high).
LIMITS = {"train": (1, 10 ** 6), "eval": (1, 10 ** 6), "height": (32, 4096), "width": (32, 4096),
          "seed": (0, 2 ** 32 - 1), "workers": (1, 256)}


def _number(key):
    return arguments.integer(*LIMITS[key])


def add_arguments(parser):
    parser.add_argument("--out", required=True, type=arguments.output_dir,
                        help="output folder (replaced if it holds a synth set)")
    parser.add_argument("--train", type=_number("train"), help="training images (default: config data.synth.train)")
    parser.add_argument("--eval", type=_number("eval"), help="eval images (default: config data.synth.eval)")
    parser.add_argument("--height", type=_number("height"), help="image height (default: config data.synth.height)")
    parser.add_argument("--width", type=_number("width"), help="image width (default: config data.synth.width)")
    parser.add_argument("--seed", type=_number("seed"), help="random seed (default: config data.synth.seed)")
    parser.add_argument("--config", type=arguments.input_file,
                        help="config.yaml for the defaults (default: built-in defaults)")
    parser.add_argument("--workers", type=_number("workers"),
                        default=min(os.cpu_count() or 1, LIMITS["workers"][1]),
                        help="render processes (default: number of cores)")


def run(args):
    from training.config import load_config

    settings = load_config(args.config).data.synth
    train, evaluate = _pick(args.train, settings.train), _pick(args.eval, settings.eval)
    height, width = _pick(args.height, settings.height), _pick(args.width, settings.width)
    seed = _pick(args.seed, settings.seed)
    _check_settings(train=train, eval=evaluate, height=height, width=width, seed=seed)
    start = time.time()
    write_synthetic_set(args.out, train, evaluate, height, width, seed, args.workers)
    print("edgedet-train synth: wrote {} train + {} eval images ({}x{}) to {} in {:.1f} s".format(
        train, evaluate, height, width, args.out, time.time() - start))
    return 0


def _pick(value, default):
    return default if value is None else value


def _check_settings(**values):
    """The data.synth values the flags did not override are checked against LIMITS too."""
    for key, value in values.items():
        low, high = LIMITS[key]
        if not low <= value <= high:
            raise UserError("--{0} / data.synth.{0}: expected a whole number in {1}..{2}, got {3}"
                            .format(key, low, high, value))


def write_synthetic_set(out, train, evaluate, height, width, seed=0, workers=1):
    """Renders and writes the whole set into `out`, atomically (temp folder + rename).

    Args:
      out: destination folder; an existing one is replaced only if it is empty or a synth set.
      train, evaluate: image counts.
      height, width: image size in pixels.
      seed: base seed.
      workers: render processes.
    """
    from training.data import coco, label_map, records

    out = os.path.abspath(os.fspath(out))
    _check_replaceable(out)
    temp = "{}.tmp-{}".format(out, os.getpid())
    os.makedirs(os.path.join(temp, "eval"))
    names = list(synthetic.CLASS_NAMES)
    context = multiprocessing.get_context("spawn")  # no fork of a process that runs TensorFlow
    try:
        with context.Pool(workers) as pool:
            records.write_tfrecord(os.path.join(temp, "train.tfrecord"),
                                   _render(pool, "train", train, height, width, seed), names)
            eval_examples = list(_render(pool, "eval", evaluate, height, width, seed))
        records.write_tfrecord(os.path.join(temp, "eval.tfrecord"), eval_examples, names)
        coco.write_coco(os.path.join(temp, "eval"), eval_examples, names)
        label_map.write_label_map(os.path.join(temp, "label_map.pbtxt"), names)
        _swap_in(temp, out)
    finally:
        if os.path.exists(temp):
            shutil.rmtree(temp)


def _render(pool, split, count, height, width, seed):
    from training.data.records import Example

    jobs = [(split, i, height, width, seed) for i in range(count)]
    for encoded, boxes, classes, source_id in pool.imap(render_example, jobs, chunksize=16):
        yield Example(encoded, "jpeg", height, width, boxes, classes, source_id)


def render_example(job):
    """Renders image `index` of `split` from its own seed; runs in a worker process.

    Returns plain values, so workers never import TensorFlow (records.py does).

    Args:
      job: (split, index, height, width, seed).

    Returns:
      (JPEG bytes, boxes float32 [K, 4] normalized [ymin, xmin, ymax, xmax], classes int32 [K]
      0-based, source_id str).
    """
    split, index, height, width, seed = job
    rng = np.random.RandomState([seed, _SPLIT_IDS[split], index])
    image, boxes, classes = synthetic.render_scene(rng, height, width)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
    if not ok:
        raise RuntimeError("OpenCV could not encode a {}x{} JPEG".format(height, width))
    return encoded.tobytes(), boxes, classes, "{}_{:06d}".format(split, index)


def _check_replaceable(out):
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError("--out {} is a file; pass a folder path".format(out))
    if os.path.isdir(out) and os.listdir(out) and not any(
            os.path.exists(os.path.join(out, m)) for m in _MARKERS):
        raise UserError("--out {} is a non-empty folder that is not a synthetic data set; "
                        "pass a new or empty folder".format(out))


def _swap_in(temp, out):
    """Renames temp to out; an old set is moved aside first and removed only afterwards."""
    old = None
    if os.path.exists(out):
        old = "{}.old-{}".format(out, os.getpid())
        os.rename(out, old)
    os.rename(temp, out)
    if old:
        shutil.rmtree(old)
