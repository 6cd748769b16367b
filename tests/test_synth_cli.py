"""`edgedet-train synth` end to end, the split loader and decoded tf.data set, and CLI exit codes."""

import json
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from app.errors import run_cli
from training.config import load_config
from training.data import coco, dataset, records, synth

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAMES = ["circle", "square", "triangle"]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "training", "synth"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "set"
    result = _cli("--out", str(out), "--train", "12", "--eval", "6", "--height", "64", "--width", "80",
                  "--seed", "3", "--workers", "2")
    assert result.returncode == 0, result.stderr
    assert "wrote 12 train + 6 eval images (64x80)" in result.stdout and " s\n" in result.stdout
    return out


def test_layout_and_splits_load_through_the_config(synth_dir):
    assert sorted(os.listdir(synth_dir)) == ["eval", "eval.tfrecord", "label_map.pbtxt", "train.tfrecord"]
    assert not [p for p in os.listdir(synth_dir.parent) if ".tmp-" in p or ".old-" in p]
    data_cfg = dataset.with_data_dir(load_config().data, synth_dir)
    train = dataset.load_split(data_cfg, "train", NAMES)
    evaluate = dataset.load_split(data_cfg, "eval", NAMES)
    assert (len(train), len(evaluate)) == (12, 6)
    assert train[0].image_format == "jpeg" and (train[0].height, train[0].width) == (64, 80)
    boxes = np.concatenate([e.boxes for e in train])
    assert len(boxes) > 12 and np.all(boxes[:, 2:] > boxes[:, :2])


def test_coco_eval_folder_matches_eval_tfrecord(synth_dir):
    from_tfrecord = records.load_tfrecord(synth_dir / "eval.tfrecord", {1: "circle", 2: "square", 3: "triangle"})
    annotations = synth_dir / "eval" / "annotations.json"
    files = [img["file_name"] for img in json.loads(annotations.read_text())["images"]]
    assert all(not os.path.isabs(f) and (synth_dir / "eval" / f).is_file() for f in files)
    from_coco = coco.load_coco(annotations, synth_dir / "eval", NAMES)
    for a, b in zip(from_tfrecord, from_coco):
        assert a.encoded == b.encoded and a.classes.tolist() == b.classes.tolist()
        np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-5)


def test_decoded_dataset_gives_rgb_images_and_ragged_boxes(synth_dir):
    examples = records.load_tfrecord(synth_dir / "train.tfrecord", {1: "circle", 2: "square", 3: "triangle"})
    elements = list(dataset.decoded_dataset(examples).as_numpy_iterator())
    assert len(elements) == 12
    for example, element in zip(examples, elements):
        bgr = cv2.imdecode(np.frombuffer(example.encoded, np.uint8), cv2.IMREAD_COLOR)
        assert element["image"].shape == (64, 80, 3) and element["image"].dtype == np.uint8
        # Same libjpeg IDCT as OpenCV: the pixels training sees are the ones evaluation sees.
        np.testing.assert_array_equal(element["image"], bgr[..., ::-1])
        np.testing.assert_array_equal(element["boxes"], example.boxes)
        assert element["classes"].dtype == np.int32 and element["classes"].tolist() == example.classes.tolist()


def test_same_seed_same_bytes_whatever_the_worker_count(tmp_path):
    synth.write_synthetic_set(tmp_path / "a", 5, 2, 48, 64, seed=9, workers=1)
    synth.write_synthetic_set(tmp_path / "b", 5, 2, 48, 64, seed=9, workers=2)
    synth.write_synthetic_set(tmp_path / "b", 5, 2, 48, 64, seed=9, workers=2)  # replaces its own set
    for name in ("train.tfrecord", "eval.tfrecord", "eval/annotations.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["a", "b"]


def test_a_failure_leaves_no_half_written_set(tmp_path, monkeypatch):
    synth.write_synthetic_set(tmp_path / "set", 3, 2, 48, 64, workers=1)
    before = (tmp_path / "set" / "train.tfrecord").read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")
    monkeypatch.setattr(coco, "write_coco", crash)
    with pytest.raises(OSError):
        synth.write_synthetic_set(tmp_path / "set", 4, 2, 48, 64, seed=1, workers=1)
    assert (tmp_path / "set" / "train.tfrecord").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["set"]


@pytest.mark.parametrize("args, message", [
    (["--train", "0"], "edgedet-train: error: argument --train: expected a whole number in 1..1000000, got '0'"),
    (["--height", "8"], "edgedet-train: error: argument --height: expected a whole number in 32..4096, got '8'"),
])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, args, message):
    result = _cli("--out", str(tmp_path / "x"), *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message
    assert not (tmp_path / "x").exists()


def test_cli_refuses_to_replace_an_unrelated_folder(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    result = _cli("--out", str(tmp_path), "--train", "2", "--eval", "1")
    assert result.returncode == 2 and "is a non-empty folder that is not a synthetic data set" in result.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_cli_unknown_config_key_exits_2(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("data:\n  synth:\n    trian: 5\n")
    result = _cli("--out", str(tmp_path / "x"), "--config", str(config))
    assert result.returncode == 2 and "trian" in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def _truncate(folder):
    path = folder / "train.tfrecord"
    path.write_bytes(path.read_bytes()[:-30])
    return "train.tfrecord: record 11: truncated or corrupt TFRecord data"


def _drop_label_map(folder):
    os.remove(folder / "label_map.pbtxt")
    return "label_map.pbtxt does not exist"


def _rename_label(folder):
    path = folder / "label_map.pbtxt"
    path.write_text(path.read_text().replace("triangle", "wedge"))
    return "lists ['circle', 'square', 'wedge'] but config model.labels is ['circle', 'square', 'triangle']"


def _empty(folder):
    records.write_tfrecord(folder / "train.tfrecord", [])
    return "train.tfrecord holds no usable records (0 read, 0 bad)"


@pytest.mark.parametrize("damage", [_truncate, _drop_label_map, _rename_label, _empty])
def test_bad_data_is_one_line_and_exit_2(synth_dir, tmp_path, capsys, damage):
    import shutil
    folder = tmp_path / "copy"
    shutil.copytree(synth_dir, folder)
    expected = damage(folder)
    data_cfg = dataset.with_data_dir(load_config().data, folder)
    code = run_cli(lambda argv: dataset.load_split(data_cfg, "train", NAMES) and 0, [], prog="edgedet-train")
    err = capsys.readouterr().err
    assert code == 2 and expected in err and len(err.strip().splitlines()) == 1
