"""From the config's data section to validated `Examples`, and from `Examples` to a tf.data set.

The training pipeline (augmentation, padding, batching) lives with training; this module stops
at one decoded image and its ragged boxes per element.
"""

import dataclasses
import os
import sys

import numpy as np
import tensorflow as tf

from app.errors import UserError
from training.data import coco, label_map, records

SPLITS = ("train", "eval")


def decoded_dataset(examples):
    """A tf.data set of decoded examples, decoded in parallel, in the order given.

    Args:
      examples: sequence of `records.Example` (at least one).

    Returns:
      tf.data.Dataset of {"image": uint8 [H, W, 3] RGB, "boxes": float32 [K, 4] normalized
      [ymin, xmin, ymax, xmax], "classes": int32 [K] 0-based}; K varies per element.
    """
    if len(examples) == 0:
        raise ValueError("expected at least one example, got 0")
    counts = [len(e.classes) for e in examples]
    boxes = np.concatenate([np.asarray(e.boxes, np.float32).reshape(-1, 4) for e in examples])
    classes = np.concatenate([np.asarray(e.classes, np.int32).reshape(-1) for e in examples])
    table = {
        "encoded": tf.constant([e.encoded for e in examples], tf.string),
        "is_jpeg": tf.constant([e.image_format in ("jpeg", "jpg") for e in examples]),
        "boxes": tf.RaggedTensor.from_row_lengths(boxes, counts),
        "classes": tf.RaggedTensor.from_row_lengths(classes, counts),
    }
    return tf.data.Dataset.from_tensor_slices(table).map(_decode, num_parallel_calls=tf.data.AUTOTUNE)


def _decode(item):
    # JPEGs get libjpeg's accurate integer IDCT, the one OpenCV (evaluation, the app) uses, so
    # training sees the very pixels the rest of edgedet sees; TF's default differs by ~1.5 levels.
    image = tf.cond(
        item["is_jpeg"],
        lambda: tf.io.decode_jpeg(item["encoded"], channels=3, dct_method="INTEGER_ACCURATE"),
        lambda: tf.io.decode_image(item["encoded"], channels=3, expand_animations=False))
    image.set_shape([None, None, 3])
    return {"image": image, "boxes": item["boxes"], "classes": item["classes"]}


def load_split(data_cfg, split, label_names):
    """Loads and validates one split as the config describes it.

    Args:
      data_cfg: `training.config.DataConfig` (format, train/eval paths, label_map, skip_bad).
      split: "train" or "eval".
      label_names: class names in 0-based id order (config model.labels).

    Returns:
      `records.Examples`; bad records skipped under data_cfg.skip_bad are reported on stderr.

    Raises:
      UserError: unknown format, missing files, a label map that does not match label_names,
        or any bad record (see records.load_tfrecord and coco.load_coco).
    """
    if split not in SPLITS:
        raise ValueError("expected split in {}, got {!r}".format(SPLITS, split))
    path = getattr(data_cfg, split)
    if data_cfg.format == "tfrecord":
        labels = check_label_map(data_cfg.label_map, label_names)
        examples = records.load_tfrecord(path, labels, skip_bad=data_cfg.skip_bad)
    elif data_cfg.format == "coco":
        images_dir = getattr(data_cfg, split + "_images") or os.path.dirname(os.path.abspath(path))
        examples = coco.load_coco(path, images_dir, label_names, skip_bad=data_cfg.skip_bad)
    else:
        raise UserError("config data.format is {!r}; use tfrecord or coco".format(data_cfg.format))
    if examples.skipped:
        print("edgedet-train: skipped {} bad record(s) of {} ({} kept)".format(
            examples.skipped, path, len(examples)), file=sys.stderr)
    return examples


def check_label_map(path, label_names):
    """Reads a label map and checks it names exactly `label_names`, in id order.

    Returns:
      dict {id (1-based): name}.
    """
    labels = label_map.read_label_map(path)
    names = label_map.label_names(labels, path)
    if names != list(label_names):
        raise UserError("label map {} lists {} but config model.labels is {}; make model.labels "
                        "match the label map (same names, id order)".format(path, names, list(label_names)))
    return labels


def with_data_dir(data_cfg, folder):
    """The data section pointed at a folder laid out as `edgedet-train synth` writes it.

    Args:
      data_cfg: `training.config.DataConfig`.
      folder: holds train.tfrecord, eval.tfrecord and label_map.pbtxt.

    Returns:
      A new DataConfig (format tfrecord) with the three paths inside `folder`.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise UserError("--data {} is not a folder; pass the folder `edgedet-train synth --out` "
                        "wrote".format(folder))
    return dataclasses.replace(
        data_cfg, format="tfrecord", train=os.path.join(folder, "train.tfrecord"),
        eval=os.path.join(folder, "eval.tfrecord"), label_map=os.path.join(folder, "label_map.pbtxt"))
