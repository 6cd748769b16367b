"""`edgedet-train doctor` on real conversions of the committed demo float network.

models/demo/saved_model (input [-1, 1]) is converted with the real TFLite converter
and edgedet's own full-integer settings (Optimize.DEFAULT, TFLITE_BUILTINS_INT8,
uint8 in and out), changing only the representative data set:
  * blank grey frames (a camera's first frames, or a placeholder data set): the
    calibration never sees an object, so the class-logit output's range tops out near 0
    and every real detection's score is clipped to sigmoid(0) = 0.5 -- "a few boxes at
    ~50% confidence". output_saturation and score_collapse must fire.
  * the user's raw 0..255 calibration. Measured on this model it does not collapse
    the scores (they spread over 0.42..0.94); calibration_input_range is the cause named.
The doctor runs on synthetic scenes like the demo's training images.
"""

import os

import numpy as np
import pytest

from conftest import ROOT
from export_support import synthetic_examples

SAVED_MODEL = ROOT / "models" / "demo" / "saved_model"
H, W = 192, 224  # the demo bundle's input


@pytest.fixture(scope="module")
def demo_files(tmp_path_factory):
    """{"float": float .tflite, "grey": grey-calibrated uint8 .tflite, "images": PNG folder}."""
    import cv2
    from training import convert_tflite, evaluate
    if not (SAVED_MODEL / "saved_model.pb").is_file():
        pytest.skip("models/demo/saved_model is not in this checkout")
    folder = tmp_path_factory.mktemp("doctor_demo")
    grey = [np.full((240, 280, 3), level, np.uint8) for level in (112, 128, 144, 128)]
    files = {"float": str(folder / "float.tflite"), "grey": str(folder / "grey.tflite"),
             "images": str(folder / "images")}
    contents = {"float": convert_tflite.to_float_tflite(SAVED_MODEL),
                "grey": convert_tflite.to_int8_tflite(SAVED_MODEL,
                                                      convert_tflite.calibration_inputs(grey, H, W))}
    for key, content in contents.items():
        with open(files[key], "wb") as f:
            f.write(content)
    os.makedirs(files["images"])
    for i, example in enumerate(synthetic_examples(8, 240, 280, seed=11, max_objects=6)):
        rgb = evaluate.decode_image(example)
        cv2.imwrite(os.path.join(files["images"], "{}.png".format(i)), rgb[:, :, ::-1])
    return files


def _diagnose(float_path, quant_path, images_dir):
    from training import doctor
    from training.diagnose.pair import load_pair
    pair = load_pair(float_path, quant_path, "-1,1")
    ranked, _ = doctor.diagnose(pair, doctor.load_images(images_dir, 8))
    return ranked, {f["id"]: f for f in ranked}


def test_blank_calibration_saturates_logits_and_collapses_scores(demo_files):
    ranked, found = _diagnose(demo_files["float"], demo_files["grey"], demo_files["images"])
    saturation = found["output_saturation"]
    assert saturation["severity"] == "error" and saturation["evidence"]["output"] == "class_logits"
    # Measured: the quantized logits top out at 0.0 while the float ones reach ~3.2; 60% of the
    # float model's highest 0.5% of logits are clipped.
    assert saturation["evidence"]["quantized_range"][1] < 0.5
    assert saturation["evidence"]["float_range"][1] > 2.0
    assert saturation["evidence"]["tail_clipped"] >= 0.45
    collapse = found["score_collapse"]
    # Measured: 77% of the quantized scores on the float model's confident anchors are in
    # [0.4, 0.6] (most exactly 0.5) against 23% of the float ones.
    assert collapse["evidence"]["quant_mid_share"] >= 0.6
    assert collapse["evidence"]["quant_mid_share"] >= 2 * collapse["evidence"]["float_mid_share"]
    assert collapse["evidence"]["confident_anchors"] >= 20
    # The input calibration is right (grey frames span nothing, but the converter pins [-1, 1]
    # through app.model.preprocess): the doctor must not blame it.
    assert "calibration_input_range" not in found
    assert ranked[0]["id"] == "output_saturation"
    assert "calibrate on more and more varied images" in ranked[0]["fix"]


def test_users_raw_calibration_of_the_demo_names_the_input_range(demo_files, tmp_path):
    from training import evaluate
    from test_user_failure import convert_like_the_user
    images = [evaluate.decode_image(e) for e in synthetic_examples(16, 240, 280, seed=3, max_objects=6)]
    user = str(tmp_path / "user.tflite")
    with open(user, "wb") as f:
        f.write(convert_like_the_user(SAVED_MODEL, images, H, W))
    ranked, found = _diagnose(demo_files["float"], user, demo_files["images"])
    assert ranked[0]["id"] == "calibration_input_range"
    # Measured: agreement 0.36; the logits keep a wide range, so neither symptom finding fires.
    assert found["detection_disagreement"]["evidence"]["agreement"] < 0.7
    assert "score_collapse" not in found and "output_saturation" not in found
