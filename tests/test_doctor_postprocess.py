"""`edgedet-train doctor` on a post-processing model converted with uint8 outputs.

The committed demo float network (models/demo/saved_model) is wrapped in the OD API
TFLite-export signature by training.postprocess_model (network, sigmoid,
TFLite_Detection_PostProcess) and converted twice with the real converter: float,
and full-integer with inference_output_type = tf.uint8, the setting people copy from
classification tutorials. The op's class-id output then passes through a uint8
quantization (scale 2/255 for 3 classes), and the doctor must say so with the fix.
"""

import os

import numpy as np
import pytest

from conftest import ROOT
from export_support import synthetic_examples

DEMO = ROOT / "models" / "demo"


def _convert_uint8_outputs(saved_model, representative):
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model)
    converter.allow_custom_ops = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.uint8  # the mistake: class ids become uint8 codes
    return converter.convert()


@pytest.fixture(scope="module")
def uint8_output_pair(tmp_path_factory):
    """{"float", "quant": .tflite paths, "images": folder of PNG scenes}."""
    import cv2
    from app.model.bundle import load_bundle
    from training import convert_tflite, evaluate, postprocess_model
    from training.config import app_config, load_config

    folder = tmp_path_factory.mktemp("doctor_pp")
    # Regular (per-class) NMS, as the OD API's export with --ssd_use_regular_nms: more boxes of
    # every class, so the truncated class ids below are common enough to measure.
    per_class = app_config.replace(load_config().postprocess, class_agnostic_nms=False)
    bundle = load_bundle(str(DEMO))
    network = postprocess_model.load_network(str(DEMO / "saved_model"))
    module = postprocess_model.build_module(
        network, bundle.anchors, len(bundle.labels), bundle.input_height, bundle.input_width,
        postprocess_model.nms_settings(per_class), bundle.box_coder_scales)
    saved = str(folder / "saved_model")
    postprocess_model.save_savedmodel(module, saved)
    images = [evaluate.decode_image(e) for e in synthetic_examples(8, 240, 280, seed=9, max_objects=6)]
    rep = convert_tflite.calibration_inputs(images, bundle.input_height, bundle.input_width, bundle.float_range)
    files = {"float": str(folder / "float.tflite"), "quant": str(folder / "quant.tflite"),
             "images": str(folder / "images")}
    contents = {"float": postprocess_model.convert(saved), "quant": _convert_uint8_outputs(saved, rep)}
    for key, content in contents.items():
        with open(files[key], "wb") as f:
            f.write(content)
    os.makedirs(files["images"])
    for i, rgb in enumerate(images[:6]):
        cv2.imwrite(os.path.join(files["images"], "{}.png".format(i)), rgb[:, :, ::-1])
    return files


def _class_output(path):
    from ai_edge_litert.interpreter import Interpreter
    from app.model.postprocess import map_postprocess_outputs
    interp = Interpreter(model_path=path)
    interp.allocate_tensors()
    details = interp.get_output_details()
    return interp, details[map_postprocess_outputs(details)["classes"]]


def test_uint8_class_output_is_named_with_the_fix(uint8_output_pair):
    from training import doctor
    from training.diagnose.pair import load_pair

    pair = load_pair(uint8_output_pair["float"], uint8_output_pair["quant"], "-1,1")
    assert pair.kind == "postprocess"
    images = doctor.load_images(uint8_output_pair["images"], 6)
    ranked, report = doctor.diagnose(pair, images)
    found = {f["id"]: f for f in ranked}
    warning = found["class_index_quantized"]
    assert warning["severity"] == "warning"
    # 3 classes: the converter calibrates the class ids 0..2 onto 0..255, scale 2/255, zero point 0.
    assert warning["evidence"]["scale"] == pytest.approx(2.0 / 255, rel=0.01)
    assert warning["evidence"]["zero_point"] == 0
    assert "inference_output_type" in warning["fix"] and "np.rint" in warning["fix"]
    # The real effect on these images: some dequantized class ids are not integers, and int()
    # truncation gives a different class than rounding for them.
    interp, detail = _class_output(uint8_output_pair["quant"])
    scale, zero = detail["quantization"]
    values = []
    from app.model import preprocess
    for rgb in images:
        interp.set_tensor(interp.get_input_details()[0]["index"],
                          preprocess.resize_to_input(rgb, *pair.quant_model.input_size())[None])
        interp.invoke()
        values.append((interp.get_tensor(detail["index"]).astype(np.float32) - zero) * scale)
    values = np.concatenate(values).ravel()
    assert np.mean(values.astype(int) != np.rint(values).astype(int)) > 0.1
    # Only the class-id output is wrong: the detections still agree with the float model, the
    # 0..2 class codes at 0 and 255 are not clipping, nor are box edges a fraction of a code step
    # past the boxes output's range (measured: -0.0048 against -0.0039 with a 0.0039 step), and
    # the float post-processing tail is not reported as float ops left in the body.
    assert found["detection_disagreement"]["evidence"]["agreement"] >= 0.9
    assert "output_saturation" not in found and "float_ops_remaining" not in found
    assert not any(f["severity"] == "error" for f in ranked)
