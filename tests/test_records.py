"""training/data/records.py: OD API TFRecord round trip and every bad-record case."""

import cv2
import numpy as np
import pytest
import tensorflow as tf

from app.capture import synthetic
from app.errors import UserError
from training.data import records
from training.data.records import Example

LABELS = {1: "circle", 2: "square", 3: "triangle"}
NAMES = ["circle", "square", "triangle"]


def _examples(count, seed=0):
    rng = np.random.RandomState(seed)
    out = []
    while len(out) < count:
        image, boxes, classes = synthetic.render_scene(rng, 48, 64, max_objects=3)
        if len(boxes) == 0:  # the bad-record cases edit the first box
            continue
        i = len(out)
        encoded = cv2.imencode(".png", image)[1].tobytes()
        out.append(Example(encoded, "png", 48, 64, boxes, classes, "img{}".format(i)))
    return out


def _feature_dict(example):
    return dict(records.make_tf_example(example, NAMES).features.feature)


def _serialize(features):
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def _write_with_bad(tmp_path, bad_index, mutate, count=5):
    """A file of `count` good records where record `bad_index` is changed by `mutate(features)`."""
    items = []
    for i, example in enumerate(_examples(count)):
        features = _feature_dict(example)
        if i == bad_index:
            mutate(features)
        items.append(_serialize(features))
    path = tmp_path / "data.tfrecord"
    records.write_tfrecord(path, items)
    return path


def test_round_trip_keeps_encoded_bytes_boxes_and_classes(tmp_path):
    examples = _examples(6)
    path = tmp_path / "train.tfrecord"
    assert records.write_tfrecord(path, examples, NAMES) == 6
    loaded = records.load_tfrecord(path, LABELS)
    assert len(loaded) == 6 and loaded.skipped == 0
    for want, got in zip(examples, loaded):
        assert got.encoded == want.encoded and got.image_format == "png"
        assert (got.height, got.width, got.source_id) == (48, 64, want.source_id)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-7)
        assert got.classes.dtype == np.int32 and got.classes.tolist() == want.classes.tolist()
    parsed = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(str(path)))).numpy())
    feature = parsed.features.feature
    assert list(feature["image/object/class/label"].int64_list.value) == (examples[0].classes + 1).tolist()
    assert [t.decode() for t in feature["image/object/class/text"].bytes_list.value] == \
        [NAMES[c] for c in examples[0].classes]


def test_labels_come_from_class_text_when_label_ids_are_absent(tmp_path):
    def drop_labels(f):
        del f["image/object/class/label"]
    path = _write_with_bad(tmp_path, 0, drop_labels, count=1)
    assert records.load_tfrecord(path, LABELS)[0].classes.tolist() == _examples(1)[0].classes.tolist()


def _set(key, values, kind="float"):
    def mutate(features):
        if kind == "float":
            features[key] = tf.train.Feature(float_list=tf.train.FloatList(value=values))
        elif kind == "int":
            features[key] = tf.train.Feature(int64_list=tf.train.Int64List(value=values))
        else:
            features[key] = tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    return mutate


def _boxes(ymin, xmin, ymax, xmax):
    def mutate(features):
        for key, v in zip(("ymin", "xmin", "ymax", "xmax"), (ymin, xmin, ymax, xmax)):
            _set("image/object/bbox/" + key, [v])(features)
        _set("image/object/class/label", [1], "int")(features)
        _set("image/object/class/text", [b"circle"], "bytes")(features)
    return mutate


def _relabel_first(label):
    def mutate(features):
        values = features["image/object/class/label"].int64_list.value
        values[0] = label
    return mutate


def _append_label(label):
    def mutate(features):
        features["image/object/class/label"].int64_list.value.append(label)
    return mutate


def _delete(key):
    def mutate(features):
        del features[key]
    return mutate


BAD_RECORDS = [
    (_set("image/encoded", [b"this is not an image"], "bytes"), "undecodable image/encoded"),
    (_boxes(0.1, 0.2, 1.3, 0.5), r"box 0 \[ymin, xmin, ymax, xmax\] = \[0.1, 0.2, 1.3, 0.5\] is outside \[0, 1\]"),
    (_boxes(0.6, 0.2, 0.4, 0.5), "is inverted or empty"),
    (_relabel_first(7), r"label id 7 is not in the label map \(ids \[1, 2, 3\]\)"),
    (_append_label(1), r"(\d+) boxes but \d+ image/object/class/label values"),
    (_delete("image/encoded"), "missing key image/encoded"),
    (_set("image/object/bbox/xmin", [0.1, 0.2, 0.3, 0.4, 0.5]), "have different lengths"),
    (_set("image/height", [99], "int"), "image/height,width say 99x64 but the image is 48x64"),
]


@pytest.mark.parametrize("mutate, reason", BAD_RECORDS)
def test_bad_record_names_file_index_reason_and_fix(tmp_path, mutate, reason):
    path = _write_with_bad(tmp_path, 3, mutate)
    with pytest.raises(UserError) as err:
        records.load_tfrecord(path, LABELS)
    message = str(err.value)
    assert message.startswith("{}: record 3: ".format(path))
    assert message.endswith("re-export the file or pass --skip-bad") and "\n" not in message
    assert __import__("re").search(reason, message), message
    skipped = records.load_tfrecord(path, LABELS, skip_bad=True)
    assert len(skipped) == 4 and skipped.skipped == 1
    assert [e.source_id for e in skipped] == ["img0", "img1", "img2", "img4"]


def test_truncated_file_names_first_lost_record(tmp_path):
    path = tmp_path / "cut.tfrecord"
    records.write_tfrecord(path, _examples(4), NAMES)
    data = path.read_bytes()
    path.write_bytes(data[:-40])
    for skip_bad in (False, True):
        with pytest.raises(UserError, match=r"cut.tfrecord: record 3: truncated or corrupt TFRecord .*"
                                            r"cannot skip.*re-export the file"):
            records.load_tfrecord(path, LABELS, skip_bad=skip_bad)


def test_corrupt_crc_in_the_middle_is_data_loss(tmp_path):
    path = tmp_path / "flip.tfrecord"
    examples = _examples(3)
    records.write_tfrecord(path, examples, NAMES)
    first = len(records.make_tf_example(examples[0], NAMES).SerializeToString()) + 16
    data = bytearray(path.read_bytes())
    data[first + 12 + 30] ^= 0xFF  # a byte inside record 1's payload
    path.write_bytes(bytes(data))
    with pytest.raises(UserError, match=r"record 1: truncated or corrupt"):
        records.load_tfrecord(path, LABELS)


def test_empty_file_and_all_bad_are_user_errors(tmp_path):
    empty = tmp_path / "empty.tfrecord"
    records.write_tfrecord(empty, [])
    with pytest.raises(UserError, match=r"empty.tfrecord holds no usable records \(0 read, 0 bad\)"):
        records.load_tfrecord(empty, LABELS)
    path = _write_with_bad(tmp_path, 0, _set("image/encoded", [b"x"], "bytes"), count=1)
    with pytest.raises(UserError, match=r"no usable records \(1 read, 1 bad\)"):
        records.load_tfrecord(path, LABELS, skip_bad=True)


def test_missing_file_is_user_error(tmp_path):
    with pytest.raises(UserError, match="missing.tfrecord does not exist"):
        records.load_tfrecord(tmp_path / "missing.tfrecord", LABELS)


def test_write_is_atomic_when_an_item_fails(tmp_path):
    path = tmp_path / "out.tfrecord"
    records.write_tfrecord(path, _examples(2), NAMES)
    before = path.read_bytes()

    def items():
        yield _examples(1)[0]
        raise RuntimeError("renderer crashed")
    with pytest.raises(RuntimeError):
        records.write_tfrecord(path, items(), NAMES)
    assert path.read_bytes() == before and not (tmp_path / "out.tfrecord.tmp").exists()


def test_make_tf_example_checks_lengths():
    bad = Example(b"", "png", 1, 1, np.zeros((2, 4), np.float32), np.zeros(1, np.int32), "x")
    with pytest.raises(ValueError, match="2 boxes and 1 classes"):
        records.make_tf_example(bad)
