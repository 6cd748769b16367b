"""`edgedet-train doctor` on real conversions of a briefly trained tiny SSD.

One tiny SSD-shaped tf_keras model (raw heads box_encodings / class_logits, the
edgedet anchors for 96x96) is trained for a few hundred steps on 96 synthetic
scenes, saved as a batch-1 SavedModel, and converted with the real TFLite
converter through export's functions (training.convert_tflite) in the ways people
convert: the user's raw 0..255 calibration, a /255 calibration, the right one, a
dynamic-range conversion of a dynamic-batch model, and a batch-2 model. The
doctor then runs on the same scenes (which the model has learned, so its float
detections are confident). The Edge TPU partition case uses the real Coral deeplab.
"""

import json
import os

import numpy as np
import pytest

from training import doctor

H = W = 96
NUM_CLASSES = 3
NUM_IMAGES = 96
STEPS = 300
SEED = 1


def _tiny_ssd(batch_size=1):
    import tensorflow as tf
    import tf_keras as keras
    from app.model import anchors as app_anchors

    tf.random.set_seed(SEED)
    per_location = app_anchors.anchors_per_location(6, (1.0, 2.0, 0.5, 3.0, 0.3333))
    image = keras.Input((H, W, 3), batch_size=batch_size, name="image")
    x = image
    for filters in (16, 24, 32, 48):  # stride 16 at the first feature map, as app.model.anchors assumes
        x = keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu6")(x)
    feats = [x]
    for _ in range(5):
        x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu6")(x)
        feats.append(x)
    boxes, logits = [], []
    for feat, k in zip(feats, per_location):
        b = keras.layers.Conv2D(4 * k, 3, padding="same")(feat)
        c = keras.layers.Conv2D(NUM_CLASSES * k, 3, padding="same",
                                bias_initializer=keras.initializers.Constant(-4.6))(feat)
        boxes.append(keras.layers.Reshape((-1, 4))(b))
        logits.append(keras.layers.Reshape((-1, NUM_CLASSES))(c))
    return keras.Model(image, [keras.layers.Concatenate(axis=1, name="box_encodings")(boxes),
                               keras.layers.Concatenate(axis=1, name="class_logits")(logits)])


def _scenes():
    """NUM_IMAGES synthetic scenes: (BGR uint8 images, normalized inputs, per-image targets)."""
    from app.model import anchors as app_anchors, preprocess
    from app.capture import synthetic
    from training import targets
    rng = np.random.RandomState(0)
    anchors = app_anchors.ssd_anchors(H, W)
    images, inputs, per_image = [], [], []
    for _ in range(NUM_IMAGES):
        bgr, boxes, classes = synthetic.render_scene(rng, H, W, max_objects=3)
        images.append(bgr)
        inputs.append(preprocess.normalize(preprocess.bgr_to_rgb(bgr).astype(np.float32)))
        per_image.append(targets.assign_targets(boxes, classes, anchors, NUM_CLASSES))
    return images, np.stack(inputs), per_image


def _train(model, inputs, per_image):
    import tensorflow as tf
    import tf_keras as keras
    from training import losses
    from training.config import TrainConfig

    batch_in = keras.Input((H, W, 3))
    trainable = keras.Model(batch_in, model(batch_in))
    stacked = {k: tf.stack([t[k] for t in per_image]) for k in per_image[0]}
    optimizer, cfg = keras.optimizers.Adam(3e-3), TrainConfig()
    rng = np.random.RandomState(SEED)

    @tf.function
    def step(x, target):
        with tf.GradientTape() as tape:
            box_encodings, class_logits = trainable(x, training=True)
            matches = tf.maximum(tf.reduce_sum(target["box_weights"]), 1.0)
            parts = losses.ssd_loss(box_encodings, class_logits, target, cfg, matches)
            loss = parts["classification"] + parts["localization"]
        grads = tape.gradient(loss, trainable.trainable_variables)
        optimizer.apply_gradients(zip(grads, trainable.trainable_variables))
        return loss

    for _ in range(STEPS):
        idx = rng.choice(NUM_IMAGES, 16, replace=False)
        loss = step(tf.constant(inputs[idx]), {k: tf.gather(v, idx) for k, v in stacked.items()})
    return float(loss)


def _write(path, content):
    with open(str(path), "wb") as f:
        f.write(content)
    return str(path)


def _convert_variants(model, rgb_images, folder):
    """The real conversions, as files in `folder`."""
    import tensorflow as tf
    import tf_keras as keras
    from training import convert_tflite as ct

    saved = str(folder / "saved_model")
    ct.save_batch1_savedmodel(model, H, W, saved)
    files = {"saved_model": saved, "float": _write(folder / "float.tflite", ct.to_float_tflite(saved))}
    for name, float_range in (("raw", (0.0, 255.0)), ("unit", (0.0, 1.0)), ("good", (-1.0, 1.0))):
        data = ct.calibration_inputs(rgb_images[:32], H, W, float_range)
        files[name] = _write(folder / (name + ".tflite"), ct.to_int8_tflite(saved, data))
    # Dynamic-range quantization of a Keras model with a free batch dimension: float
    # activations remain and the batch is dynamic (a common first attempt).
    free = keras.Input((H, W, 3))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(free, model(free)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    files["dynamic"] = _write(folder / "dynamic.tflite", converter.convert())
    batch2 = keras.Input((H, W, 3), batch_size=2)
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(batch2, model(batch2)))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    good = ct.calibration_inputs(rgb_images[:8], H, W)
    converter.representative_dataset = lambda: ([np.repeat(x[0], 2, axis=0)] for x in good())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.uint8
    files["batch2"] = _write(folder / "batch2.tflite", converter.convert())
    return files


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """{name: path} of the trained tiny model's conversions, plus "images" (a folder of PNGs)."""
    import cv2
    from app.model import preprocess
    folder = tmp_path_factory.mktemp("doctor")
    images, inputs, per_image = _scenes()
    model = _tiny_ssd()
    loss = _train(model, inputs, per_image)
    assert loss < 0.5, "the tiny model did not learn its scenes (loss {:.3f})".format(loss)
    os.makedirs(str(folder / "images"))
    for i, bgr in enumerate(images[:12]):
        cv2.imwrite(str(folder / "images" / "{:02d}.png".format(i)), bgr)
    files = _convert_variants(model, [preprocess.bgr_to_rgb(b) for b in images], folder)
    files["images"] = str(folder / "images")
    return files


def _doctor(tmp_path, capsys, *argv):
    """Runs `edgedet-train doctor ARGV --json OUT`; returns (exit code, JSON report, stdout lines)."""
    from app.errors import run_cli
    from training.cli import main
    out = str(tmp_path / "doctor.json")
    code = run_cli(main, ["doctor"] + list(argv) + ["--json", out], prog="edgedet-train")
    printed = capsys.readouterr().out.splitlines()
    report = None
    if os.path.exists(out):
        with open(out) as f:
            report = json.load(f)
    return code, report, printed


def _by_id(report):
    return {f["id"]: f for f in report["findings"]}


def _pair_args(pairs, quant, *extra):
    return ["--float", pairs["float"], "--quant", pairs[quant], "--images", pairs["images"]] + list(extra)


def test_users_raw_calibration_is_named_first(pairs, tmp_path, capsys):
    code, report, printed = _doctor(tmp_path, capsys, *_pair_args(pairs, "raw", "--float-range=-1,1"))
    assert code == 1
    first = report["findings"][0]
    assert first["id"] == "calibration_input_range" and first["severity"] == "error"
    ev = first["evidence"]
    # Raw 0..255 calibration: input quantization ~(1.0, 0) instead of (2/255, 127.5).
    assert ev["scale"] == pytest.approx(1.0, abs=0.02) and ev["zero_point"] == 0
    assert ev["input_interval"] == pytest.approx([0.0, 255.0], abs=3.0)
    assert ev["calibration_normalization"].startswith("raw 0..255")
    # The quantized model computes the float model on raw pixels, not on [-1, 1].
    assert ev["error_vs_implied"] < 0.2 and ev["error_vs_expected"] > 3 * ev["error_vs_implied"]
    found = _by_id(report)
    assert found["input_quantization_mismatch"]["evidence"]["codes_inside"] <= 3
    assert found["layer_error_blowup"]["evidence"]["index"] == 0
    assert found["layer_error_blowup"]["evidence"]["error"] > 1.0
    assert found["detection_disagreement"]["severity"] == "error"
    assert found["detection_disagreement"]["evidence"]["agreement"] < 0.3
    assert found["box_drift"]["evidence"]["center_shift"] > 0.1
    # The first printed line names the cause and the fix in code terms.
    assert "raw 0..255 pixels" in printed[0] and "[-1, 1]" in printed[0]
    assert "yield [(img.astype(np.float32) / 127.5 - 1.0)[None]]" in printed[0]


def test_unit_calibration_same_id_other_detail(pairs, tmp_path, capsys):
    code, report, printed = _doctor(tmp_path, capsys, *_pair_args(pairs, "unit", "--float-range=-1,1"))
    assert code == 1
    first = report["findings"][0]
    assert first["id"] == "calibration_input_range"
    ev = first["evidence"]
    assert ev["scale"] == pytest.approx(1.0 / 255, rel=0.02) and ev["zero_point"] == 0
    assert ev["calibration_normalization"] == "pixels / 255"
    assert "pixels / 255" in first["detail"] and "raw 0..255" not in first["detail"]
    # [0, 1] still has all 256 codes inside [-1, 1]: representable, just the wrong half.
    assert "input_quantization_mismatch" not in _by_id(report)
    # An error: below the app's reference.min_agreement (0.6), so the app would refuse the pair.
    # (Was "< 0.5": one fresh-clone run of the whole suite measured exactly 0.5.)
    disagreement = _by_id(report)["detection_disagreement"]
    assert disagreement["severity"] == "error" and disagreement["evidence"]["agreement"] < 0.6
    assert "pixels / 255" in printed[0]


def test_good_conversion_has_no_errors(pairs, tmp_path, capsys):
    code, report, printed = _doctor(tmp_path, capsys, *_pair_args(pairs, "good", "--float-range=-1,1"))
    assert code == 0
    assert [f for f in report["findings"] if f["severity"] == "error"] == []
    agree = _by_id(report)["detection_disagreement"]
    assert agree["severity"] == "info"
    assert agree["evidence"]["agreement"] >= 0.9 and agree["evidence"]["map50"] >= 0.8
    assert agree["evidence"]["float_detections"] >= 12  # the trained model does detect its scenes
    assert printed[0].startswith("doctor: no problem found")


def test_float_range_is_estimated_when_nothing_says(pairs, tmp_path, capsys):
    code, report, printed = _doctor(tmp_path, capsys, *_pair_args(pairs, "good"))
    assert code == 0
    assert report["float_range"] == [-1.0, 1.0]
    assert report["float_range_source"].startswith("estimated")
    assert any("estimated" in line for line in printed[:4])


def test_dynamic_range_conversion_of_dynamic_batch_model(pairs, tmp_path, capsys):
    code, report, _ = _doctor(tmp_path, capsys, *_pair_args(pairs, "dynamic", "--float-range=-1,1"))
    assert code == 1
    found = _by_id(report)
    assert found["float_ops_remaining"]["severity"] == "error"
    assert found["dynamic_shape"]["severity"] == "error"
    assert report["findings"][0]["id"] == "float_ops_remaining"


def test_batch_two_model(pairs, tmp_path, capsys):
    code, report, _ = _doctor(tmp_path, capsys, *_pair_args(pairs, "batch2", "--float-range=-1,1"))
    assert code == 1
    assert report["findings"][0]["id"] == "batch_not_one"
    assert "[2, 96, 96, 3]" in report["findings"][0]["detail"]
    # The same weights, well calibrated: the batch is the only real problem.
    assert _by_id(report)["detection_disagreement"]["evidence"]["agreement"] >= 0.8


def test_partial_edgetpu_mapping_of_real_coral_model(coral_dir, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    os.symlink(str(coral_dir / "owl.jpg"), str(images / "owl.jpg"))
    model = str(coral_dir / "deeplabv3_mnv2_dm05_pascal_quant.tflite")
    code, report, _ = _doctor(tmp_path, capsys, "--float", model, "--quant", model, "--images", str(images))
    assert code == 0
    assert report["kind"] == "generic"
    part = _by_id(report)["edgetpu_partition"]
    assert part["severity"] == "warning"
    # The real compiler's figures for this model: 64 of 72 ops mapped, cut at #64 RESIZE_BILINEAR.
    assert (part["evidence"]["ops_on_tpu"], part["evidence"]["ops_on_cpu"]) == (64, 8)
    assert part["evidence"]["first_cpu_op"]["op"] == "RESIZE_BILINEAR"
    assert [f["id"] for f in report["findings"]] == ["edgetpu_partition"]


def test_bad_input_exits_2(pairs, tmp_path, capsys):
    from app.errors import run_cli
    from training.cli import main
    code = run_cli(main, ["doctor", "--float", pairs["float"], "--quant", pairs["good"], "--images",
                          str(tmp_path / "missing")], prog="edgedet-train")
    assert code == 2
    assert "--images" in capsys.readouterr().err
    code = run_cli(main, ["doctor", "--float", pairs["float"], "--quant", pairs["images"], "--images",
                          pairs["images"]], prog="edgedet-train")
    assert code == 2


def test_saved_model_as_float_reference(pairs, tmp_path, capsys):
    # --float is the SavedModel the quantized file was converted from; the doctor converts it
    # to a float .tflite itself, so both run on one interpreter.
    code, report, _ = _doctor(tmp_path, capsys, "--float", pairs["saved_model"], "--quant", pairs["raw"],
                              "--images", pairs["images"], "--float-range=-1,1")
    assert code == 1
    assert report["findings"][0]["id"] == "calibration_input_range"
    assert _by_id(report)["layer_error_blowup"]["evidence"]["index"] == 0
