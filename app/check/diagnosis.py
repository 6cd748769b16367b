"""Names the likely cause when the live model disagrees with its float twin.

Read from what the app can see without TensorFlow: the live interpreter's input
tensor (dtype and quantization), the float range the bundle says the float model
expects, and the input quantization export recorded in model.json. The first
cause it finds wins, most specific first:

1. input range: the uint8 input quantization does not map 0..255 onto the float
   range (the user's failure: calibrated with raw pixels gives scale ~1, zero point 0);
2. a swapped file: the int8 model's quantization differs from what model.json recorded;
3. otherwise: quantization error inside the network, or an Edge TPU compile that
   differs from its CPU twin.

Every cause ends with the `edgedet-train doctor` command that takes the pair apart.
"""

import os

import numpy as np

from app.model import preprocess

# How far (relative scale, zero point units) a quantization may be from the expected one
# and still count as mapping 0..255 onto the float range; converters round the zero point.
SCALE_RTOL = 0.01
ZERO_POINT_TOL = 1.0


def mapped_range(scale, zero_point, dtype="uint8"):
    """The float range raw pixels 0..255 land on through an input quantization.

    Args:
      scale: quantization scale (> 0).
      zero_point: quantization zero point, in the tensor's own integer domain.
      dtype: "uint8" or "int8" (int8 inputs get pixel - 128).

    Returns:
      (low, high) floats: what pixel 0 and pixel 255 mean to the model.
    """
    if not scale > 0:
        raise ValueError("expected scale > 0, got {!r}".format(scale))
    shift = 128 if np.dtype(dtype) == np.int8 else 0
    return (0 - shift - zero_point) * scale, (255 - shift - zero_point) * scale


def _fmt_range(values):
    return "[{:g}, {:g}]".format(round(values[0], 3), round(values[1], 3))


def input_range_cause(dtype, scale, zero_point, float_range):
    """A sentence naming an input range mismatch, or "" when the quantization fits.

    Args:
      dtype: the live input tensor's dtype name ("uint8", "int8" or "float32").
      scale, zero_point: its quantization (scale 0 = not quantized).
      float_range: (low, high) the float model expects, from model.json.
    """
    if np.dtype(dtype) == np.float32 or not scale > 0:
        return ""
    want_scale, want_zero = preprocess.expected_input_quantization(float_range)
    if np.dtype(dtype) == np.int8:
        want_zero -= 128.0
    if abs(scale - want_scale) <= SCALE_RTOL * want_scale and abs(zero_point - want_zero) <= ZERO_POINT_TOL:
        return ""
    low, high = mapped_range(scale, zero_point, dtype)
    text = ("input range mismatch: the {} model's input quantization (scale {:.6g}, zero point {}) maps "
            "0..255 to {} but the float model expects {}".format(
                np.dtype(dtype).name, scale, zero_point, _fmt_range((low, high)), _fmt_range(float_range)))
    if abs(low) < 0.5 and abs(high - 255.0) < 0.1 * 255.0:
        return text + ": it was calibrated with raw pixels, not with app.model.preprocess (normalized) images"
    return text + ": its representative data was not preprocessed like training (app.model.preprocess)"


def recorded_cause(scale, zero_point, recorded):
    """A sentence when the model's input quantization differs from model.json's, else "".

    Args:
      scale, zero_point: the live int8 model's input quantization.
      recorded: (scale, zero_point) export wrote into model.json, or None.
    """
    if recorded is None or not scale > 0:
        return ""
    if abs(scale - recorded[0]) <= SCALE_RTOL * recorded[0] and abs(zero_point - recorded[1]) <= ZERO_POINT_TOL:
        return ""
    return ("the int8 model file is not the one export checked: its input quantization (scale {:.6g}, zero "
            "point {}) differs from model.json's ({:.6g}, {})".format(scale, zero_point, recorded[0], recorded[1]))


def doctor_hint(float_path, live_path, images):
    """The `edgedet-train doctor` command line for this pair of models."""
    return "run `edgedet-train doctor --float {} --quant {} --images {}` to find the layer that diverges".format(
        float_path, live_path, images)


def likely_cause(dtype, scale, zero_point, float_range, model_key, recorded=None):
    """The most specific cause this side can name (without the doctor hint).

    Args:
      dtype: live input dtype name; scale, zero_point: its quantization.
      float_range: (low, high) from model.json.
      model_key: "edgetpu" | "int8" | "float" (which bundle model runs live).
      recorded: model.json's input_quantization for the int8 model, or None.

    Returns:
      One sentence, never empty.
    """
    cause = input_range_cause(dtype, scale, zero_point, float_range)
    extra = recorded_cause(scale, zero_point, recorded)
    if cause:
        return cause + ("; " + extra if extra else "")
    if extra:
        return extra
    if model_key == "float":
        return "the live model is the float model itself; a disagreement means a runtime fault, not quantization"
    text = ("the input quantization fits {}, so the loss is inside the network: activation ranges calibrated "
            "on unrepresentative images, or a model not trained quantization-aware".format(_fmt_range(float_range)))
    if model_key == "edgetpu":
        text += ", or a compiled model that differs from its CPU twin (recompile model_int8.tflite)"
    return text


def describe_cause(interpreter, float_range, model_key, float_path, live_path, images, recorded=None):
    """likely_cause() read from a live interpreter, plus the doctor hint: one log-ready sentence.

    Args:
      interpreter: the live TFLite interpreter (its first input is the image).
      float_range: (low, high) from model.json.
      model_key: "edgetpu" | "int8" | "float".
      float_path, live_path: the two .tflite files, for the doctor command.
      images: a folder or file of images for the doctor command.
      recorded: model.json's input_quantization of the int8 model, or None.
    """
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    dtype = np.dtype(detail["dtype"]).name
    cause = likely_cause(dtype, float(scale), int(zero_point), float_range, model_key, recorded)
    return "{}; {}".format(cause, doctor_hint(float_path, live_path, images or os.curdir))
