"""app.model.bundle.load_bundle on bundles built in tmp_path, good and broken.

The .tflite files here are placeholder bytes: load_bundle only checks they exist
(the runtime opens them), so no real model is needed for these checks.
"""

import json

import numpy as np
import pytest

from app.model.anchors import ssd_anchors
from app.model.bundle import Bundle, ModelFile, load_bundle
from app.errors import UserError

ANCHORS = ssd_anchors(64, 96, num_layers=2)
OUTPUTS = {"box_encodings": "StatefulPartitionedCall:0", "class_logits": "StatefulPartitionedCall:1"}


def model_json():
    return {
        "format_version": 1,
        "labels": ["circle", "square", "triangle"],
        "input": {"height": 64, "width": 96, "color": "RGB", "resize": "stretch", "float_range": [-1.0, 1.0]},
        "num_anchors": len(ANCHORS),
        "box_coder": {"y_scale": 10.0, "x_scale": 10.0, "height_scale": 5.0, "width_scale": 5.0},
        "score_converter": "sigmoid",
        "models": {
            "float": {"file": "model_float.tflite", "outputs": dict(OUTPUTS)},
            "int8": {"file": "model_int8.tflite", "outputs": dict(OUTPUTS),
                     "input_quantization": [0.00784313725490196, 128]},
        },
        "postprocess": {"score_threshold": 0.5, "iou_threshold": 0.6},
        "samples": ["samples/0.jpg"],
    }


def make_bundle(tmp_path, data=None, anchors=ANCHORS, labels_txt="circle\nsquare\ntriangle\n"):
    root = tmp_path / "demo"
    (root / "samples").mkdir(parents=True)
    (root / "samples" / "0.jpg").write_bytes(b"\xff\xd8placeholder")
    for name in ("model_float.tflite", "model_int8.tflite"):
        (root / name).write_bytes(b"TFL3placeholder")
    np.save(str(root / "anchors.npy"), anchors)
    if labels_txt is not None:
        (root / "labels.txt").write_text(labels_txt)
    (root / "model.json").write_text(json.dumps(model_json() if data is None else data))
    return root


def test_loads_a_good_bundle(tmp_path):
    root = make_bundle(tmp_path)
    b = load_bundle(str(root))
    assert isinstance(b, Bundle)
    assert b.path == str(root)
    assert b.labels == ["circle", "square", "triangle"]
    assert (b.input_height, b.input_width, b.float_range) == (64, 96, (-1.0, 1.0))
    np.testing.assert_array_equal(b.anchors, ANCHORS)
    assert b.anchors.dtype == np.float32
    assert b.box_coder_scales == (10.0, 10.0, 5.0, 5.0)
    assert b.score_converter == "sigmoid"
    assert sorted(b.models) == ["float", "int8"]
    assert b.models["int8"] == ModelFile(str(root / "model_int8.tflite"), OUTPUTS,
                                         (0.00784313725490196, 128))
    assert b.models["float"].input_quantization is None
    # Missing postprocess keys come from the config defaults.
    assert b.postprocess == {"score_threshold": 0.5, "iou_threshold": 0.6, "max_detections": 15,
                             "max_detections_per_class": 10, "class_agnostic_nms": True}
    assert b.samples == [str(root / "samples" / "0.jpg")]
    assert b.raw["num_anchors"] == len(ANCHORS)
    assert b.resize == "bilinear"  # bundles without input.resize_method
    with pytest.raises(AttributeError):
        b.labels = []


def test_resize_method_is_read(tmp_path):
    root = make_bundle(tmp_path, data=_with("input.resize_method", "bilinear_tf1"))
    assert load_bundle(str(root)).resize == "bilinear_tf1"


def test_labels_txt_is_optional(tmp_path):
    assert load_bundle(str(make_bundle(tmp_path, labels_txt=None))).labels[2] == "triangle"


def _without(dotted):
    data = model_json()
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    del node[last]
    return data


def _with(dotted, value):
    data = model_json()
    *parents, last = dotted.split(".")
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    return data


@pytest.mark.parametrize("data,match", [
    (_without("labels"), r"model.json: missing key 'labels'\. Re-export"),
    (_without("input.height"), r"missing key 'input.height'"),
    (_without("num_anchors"), r"missing key 'num_anchors'"),
    (_without("box_coder.x_scale"), r"missing key 'box_coder.x_scale'"),
    (_without("models.int8.outputs.class_logits"), r"models.int8\).*missing key 'outputs.class_logits'"),
    (_with("input.height", "64"), r"key 'input.height' must be int, got '64'"),
    (_with("input.float_range", [1.0, -1.0]), r"float_range \[low, high\] with low < high"),
    (_with("format_version", 2), r"'format_version' is 2; this app reads version 1"),
    (_with("score_converter", "relu"), r"'score_converter' must be sigmoid or softmax"),
    (_with("models", {"tpu": {}}), r"unknown model kind\(s\) \['tpu'\]"),
    (_with("models", {"edgetpu": {"file": "model_float.tflite", "outputs": OUTPUTS}}),
     r"neither 'float' nor 'int8'"),
    (_with("models.int8.input_quantization", [0, 128]), r"\[scale > 0, zero_point\]"),
    (_with("postprocess", {"max_detections": 1.5}), r"'max_detections' must be int"),
    (_with("postprocess", {"class_agnostic_nms": "yes"}), r"'class_agnostic_nms' must be bool"),
    (_with("box_coder.y_scale", 0), r"scales must be > 0"),
    (_with("labels", []), r"'labels' must be a non-empty list"),
    (_with("input.resize_method", "area"), r"'input.resize_method' must be one of bilinear \| bilinear_tf1"),
])
def test_bad_model_json_keys(tmp_path, data, match):
    root = make_bundle(tmp_path, data=data)
    with pytest.raises(UserError, match=match) as info:
        load_bundle(str(root))
    assert str(root / "model.json") in str(info.value)


def test_missing_directory(tmp_path):
    with pytest.raises(UserError, match=r"nope: no such bundle directory\. Pass --model"):
        load_bundle(str(tmp_path / "nope"))


def test_missing_model_json(tmp_path):
    root = make_bundle(tmp_path)
    (root / "model.json").unlink()
    with pytest.raises(UserError, match=r"model.json: not found\. Pass --model"):
        load_bundle(str(root))


def test_bad_json(tmp_path):
    root = make_bundle(tmp_path)
    (root / "model.json").write_text('{"format_version": 1,, }')
    with pytest.raises(UserError, match=r"model.json: invalid JSON \(.*line 1 column 22"):
        load_bundle(str(root))
    (root / "model.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="JSON object at the top level"):
        load_bundle(str(root))


def test_anchor_count_mismatch(tmp_path):
    root = make_bundle(tmp_path, anchors=ANCHORS[:-6])
    with pytest.raises(UserError, match=r"anchors.npy: holds {} anchors but model.json 'num_anchors' is {}"
                       .format(len(ANCHORS) - 6, len(ANCHORS))):
        load_bundle(str(root))


def test_missing_or_malformed_anchors(tmp_path):
    root = make_bundle(tmp_path, anchors=ANCHORS[:, :3])
    with pytest.raises(UserError, match=r"expected float \[N, 4\]"):
        load_bundle(str(root))
    (root / "anchors.npy").write_bytes(b"not numpy")
    with pytest.raises(UserError, match="anchors.npy: unreadable"):
        load_bundle(str(root))
    (root / "anchors.npy").unlink()
    with pytest.raises(UserError, match="anchors.npy: not found"):
        load_bundle(str(root))


def test_labels_txt_mismatch(tmp_path):
    root = make_bundle(tmp_path, labels_txt="circle\nsquare\n")
    with pytest.raises(UserError, match=r"labels.txt: 2 classes \['circle', 'square'\] do not match "
                                        r"model.json labels \['circle', 'square', 'triangle'\]"):
        load_bundle(str(root))


def test_missing_tflite_and_sample(tmp_path):
    root = make_bundle(tmp_path)
    (root / "model_int8.tflite").unlink()
    with pytest.raises(UserError, match=r"'models.int8.file' names .*model_int8.tflite, which does not exist"):
        load_bundle(str(root))
    root = make_bundle(tmp_path / "b")
    (root / "samples" / "0.jpg").unlink()
    with pytest.raises(UserError, match=r"'samples' names .*0.jpg, which does not exist"):
        load_bundle(str(root))


def test_convert_savedmodel_bundle_is_named_not_misread(tmp_path):
    from app.model import postprocess_bundle
    (tmp_path / "model.json").write_text(json.dumps({"format_version": 1, "kind": "postprocess"}))
    with pytest.raises(UserError, match="convert-savedmodel.*only `edgedet --model"):
        load_bundle(str(tmp_path))
    assert postprocess_bundle.kind_of(str(tmp_path)) == "postprocess"
    with pytest.raises(UserError, match="input"):
        postprocess_bundle.load(str(tmp_path))  # no input section: named, not a KeyError
