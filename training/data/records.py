"""OD API TFRecords: read them (validating every record once), write them atomically.

A record holds `image/encoded`, `image/format`, `image/height`, `image/width`,
`image/source_id`, `image/object/bbox/{ymin,xmin,ymax,xmax}` (normalized),
`image/object/class/label` (1-based) and `image/object/class/text`. Parsing uses Model Garden's
`TfExampleDecoder`; images are decoded once here to prove they decode, and then only the
encoded bytes are kept (the input pipeline decodes them again in parallel).
"""

import collections
import os

import numpy as np
import tensorflow as tf
from official.vision.dataloaders import tf_example_decoder

from app.errors import UserError

Example = collections.namedtuple("Example", "encoded image_format height width boxes classes source_id")
Example.__doc__ = """One image and its boxes.

encoded: bytes of the encoded image; image_format: 'jpeg' | 'png' | ...; height, width: pixels;
boxes: float32 [K, 4] normalized [ymin, xmin, ymax, xmax]; classes: int32 [K] 0-based;
source_id: str."""

_FIX = "re-export the file or pass --skip-bad"
# Coordinates this far outside [0, 1] are float noise from the exporter, not bad boxes.
_BOX_TOLERANCE = 1e-3


class Examples(list):
    """A list of `Example` plus `skipped`, the number of bad records left out."""

    def __init__(self, items=(), skipped=0):
        super().__init__(items)
        self.skipped = int(skipped)


class _Decoder(tf_example_decoder.TfExampleDecoder):
    """Model Garden's decoder, with `image/source_id` optional as in the OD API.

    An empty source id is replaced by a hash of the image bytes (Model Garden's fallback).
    """

    def __init__(self):
        super().__init__(regenerate_source_id=False)
        self._keys_to_features["image/source_id"] = tf.io.FixedLenFeature((), tf.string, "")


_EXTRA_FEATURES = {
    "image/encoded": tf.io.FixedLenFeature((), tf.string),
    "image/format": tf.io.FixedLenFeature((), tf.string, ""),
    "image/object/class/text": tf.io.VarLenFeature(tf.string),
}


def _parse(record):
    """Graph-side parse of one serialized tf.Example (errors surface per record)."""
    extra = tf.io.parse_single_example(record, _EXTRA_FEATURES)
    decoded = _Decoder().decode(record)
    return {
        "encoded": extra["image/encoded"],
        "format": extra["image/format"],
        "texts": extra["image/object/class/text"].values,
        "image_shape": tf.shape(decoded["image"]),
        "height": decoded["height"],
        "width": decoded["width"],
        "boxes": decoded["groundtruth_boxes"],
        "labels": decoded["groundtruth_classes"],
        "source_id": decoded["source_id"],
    }


def load_tfrecord(path, label_map, skip_bad=False):
    """Reads and validates every record of an OD API TFRecord file, eagerly, once.

    Args:
      path: TFRecord file.
      label_map: dict {id (1-based): name}, from `label_map.read_label_map`.
      skip_bad: leave bad records out (counted in `.skipped`) instead of stopping.

    Returns:
      `Examples` in file order; classes are 0-based (`label - 1`).

    Raises:
      UserError: missing file, unreadable or truncated file, a bad record (without skip_bad),
        or no usable record. The message names the file, the record index and the fix.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("TFRecord {} does not exist; check data.train / data.eval in the config "
                        "or the --data folder".format(path))
    raw = _read_raw_records(path)
    parsed = iter(tf.data.Dataset.from_tensor_slices(tf.constant(raw, tf.string) if raw else
                                                     tf.zeros([0], tf.string))
                  .map(_parse, num_parallel_calls=tf.data.AUTOTUNE))
    examples, skipped = Examples(), 0
    for index in range(len(raw)):
        try:
            values = next(parsed)
            example = _to_example(values, label_map)
        except tf.errors.OpError as e:
            example = _reason_from_tf_error(e)
        except ValueError as e:
            example = str(e)
        if isinstance(example, Example):
            examples.append(example)
        elif skip_bad:
            skipped += 1
        else:
            raise UserError("{}: record {}: {}; {}".format(path, index, example, _FIX))
    examples.skipped = skipped
    if not examples:
        raise UserError("{} holds no usable records ({} read, {} bad); point the config at a "
                        "non-empty TFRecord".format(path, len(raw), skipped))
    return examples


def _read_raw_records(path):
    """All serialized records of a file; a damaged frame stops the read with a UserError."""
    raw = []
    iterator = iter(tf.data.TFRecordDataset(path))
    while True:
        try:
            raw.append(next(iterator).numpy())
        except StopIteration:
            return raw
        except tf.errors.DataLossError:
            # The framing (length + CRC) is broken: nothing after it can be located.
            raise UserError("{}: record {}: truncated or corrupt TFRecord data (--skip-bad cannot "
                            "skip past a damaged frame, {} records before it are fine); re-export "
                            "the file".format(path, len(raw), len(raw))) from None
        except tf.errors.OpError as e:
            raise UserError("{}: cannot read as a TFRecord ({}); re-export the file".format(
                path, e.message.splitlines()[0])) from None


def _reason_from_tf_error(error):
    """One-line reason for a record the TF parser or image decoder refused."""
    message = error.message.splitlines()[0]
    if "could not be found" in message:
        return "missing key {}".format(message.split("Feature: ", 1)[-1].split(" (", 1)[0])
    if "Shapes of all inputs must match" in message:  # the decoder stacks the 4 coordinate lists
        return "image/object/bbox/ymin,xmin,ymax,xmax have different lengths"
    if "Data types don't match" in message or "Could not parse example" in message:
        return "wrong value type or not a tf.Example ({})".format(message[:160])
    return "undecodable image/encoded ({})".format(message[:160])


def _to_example(values, label_map):
    """Checks one parsed record; returns an Example or raises ValueError with the reason."""
    shape = values["image_shape"].numpy()
    boxes = values["boxes"].numpy().reshape(-1, 4)
    labels = values["labels"].numpy()
    height, width = int(values["height"].numpy()), int(values["width"].numpy())
    if (height, width) != (shape[0], shape[1]):
        raise ValueError("image/height,width say {}x{} but the image is {}x{}".format(
            height, width, shape[0], shape[1]))
    labels = _labels_or_texts(labels, values["texts"].numpy(), len(boxes), label_map)
    _check_boxes(boxes)
    image_format = values["format"].numpy().decode("utf-8", "replace").lower()
    encoded = values["encoded"].numpy()
    return Example(encoded=encoded, image_format=image_format or _sniff_format(encoded),
                   height=height, width=width, boxes=np.clip(boxes, 0.0, 1.0).astype(np.float32),
                   classes=(labels - 1).astype(np.int32),
                   source_id=values["source_id"].numpy().decode("utf-8", "replace"))


def _labels_or_texts(labels, texts, count, label_map):
    """1-based label ids; from class/text through the label map when class/label is absent."""
    if len(labels) == 0 and len(texts) == count and count:
        ids = {name: i for i, name in label_map.items()}
        unknown = [t.decode() for t in texts if t.decode() not in ids]
        if unknown:
            raise ValueError("class text {!r} is not in the label map {}".format(
                unknown[0], sorted(ids)))
        labels = np.array([ids[t.decode()] for t in texts], np.int64)
    if len(labels) != count:
        raise ValueError("{} boxes but {} image/object/class/label values".format(count, len(labels)))
    unknown = sorted(set(labels.tolist()) - set(label_map))
    if unknown:
        raise ValueError("label id {} is not in the label map (ids {})".format(
            unknown[0], sorted(label_map)))
    return labels


def _check_boxes(boxes):
    """Raises ValueError for a box outside [0, 1] or not positive in size."""
    outside = np.flatnonzero(np.any((boxes < -_BOX_TOLERANCE) | (boxes > 1 + _BOX_TOLERANCE), axis=1))
    if len(outside):
        raise ValueError("box {} [ymin, xmin, ymax, xmax] = {} is outside [0, 1] (boxes must be "
                         "normalized)".format(outside[0], _format_box(boxes[outside[0]])))
    inverted = np.flatnonzero((boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]))
    if len(inverted):
        raise ValueError("box {} [ymin, xmin, ymax, xmax] = {} is inverted or empty (needs ymin < ymax "
                         "and xmin < xmax)".format(inverted[0], _format_box(boxes[inverted[0]])))


def _format_box(box):
    return "[{}]".format(", ".join("{:.4g}".format(float(v)) for v in box))


def _sniff_format(encoded):
    if encoded[:3] == b"\xff\xd8\xff":
        return "jpeg"
    if encoded[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    return "unknown"


def make_tf_example(example, label_names=None):
    """An OD API tf.train.Example from an `Example`.

    Args:
      example: `Example` (boxes normalized [ymin, xmin, ymax, xmax], classes 0-based).
      label_names: names by 0-based class id for `image/object/class/text`; None omits it.

    Returns:
      tf.train.Example with labels written 1-based.
    """
    boxes = np.asarray(example.boxes, np.float32).reshape(-1, 4)
    classes = np.asarray(example.classes, np.int64).reshape(-1)
    if len(boxes) != len(classes):
        raise ValueError("expected one class per box, got {} boxes and {} classes".format(
            len(boxes), len(classes)))

    def floats(v):
        return tf.train.Feature(float_list=tf.train.FloatList(value=v.tolist()))

    def ints(v):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=list(v)))

    def strings(v):
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=list(v)))

    feature = {
        "image/encoded": strings([example.encoded]),
        "image/format": strings([example.image_format.encode()]),
        "image/height": ints([int(example.height)]),
        "image/width": ints([int(example.width)]),
        "image/source_id": strings([str(example.source_id).encode()]),
        "image/object/bbox/ymin": floats(boxes[:, 0]),
        "image/object/bbox/xmin": floats(boxes[:, 1]),
        "image/object/bbox/ymax": floats(boxes[:, 2]),
        "image/object/bbox/xmax": floats(boxes[:, 3]),
        "image/object/class/label": ints((classes + 1).tolist()),
    }
    if label_names is not None:
        feature["image/object/class/text"] = strings([label_names[c].encode() for c in classes])
    return tf.train.Example(features=tf.train.Features(feature=feature))


def write_tfrecord(path, examples, label_names=None):
    """Writes examples to a TFRecord file atomically (temp file, then rename).

    Args:
      path: destination file.
      examples: iterable of `Example`, tf.train.Example, or serialized bytes.
      label_names: names by 0-based class id, for `image/object/class/text` of `Example`s.

    Returns:
      Number of records written.
    """
    path = os.fspath(path)
    temp = path + ".tmp"
    count = 0
    try:
        with tf.io.TFRecordWriter(temp) as writer:
            for item in examples:
                if isinstance(item, Example):
                    item = make_tf_example(item, label_names)
                writer.write(item if isinstance(item, bytes) else item.SerializeToString())
                count += 1
        os.replace(temp, path)
    finally:
        if os.path.exists(temp):
            os.remove(temp)
    return count
