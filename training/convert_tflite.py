"""SavedModel (batch 1, static) -> float and full-integer TFLite, and the checks on the result.

The user's failure was a uint8 model calibrated on raw 0..255 floats while the
graph expects [-1, 1]. Here the representative data is eval images through
`app.model.preprocess` (the function training uses), and the result is checked
afterwards: input quantization must map raw pixels onto the float range, every
shape must be static, and no float tensor may be left between input and outputs.
"""

import numpy as np

from app.model import preprocess
from training import tflite_model

# Ops that legitimately touch a float tensor in a full-integer model: none. The
# (de)quantize ops at the boundary are uint8 <-> int8 when inference types are uint8.


class ConversionCheckError(Exception):
    """The converted model breaks one of the full-integer invariants; the message says which."""


def save_batch1_savedmodel(model, input_height, input_width, path):
    """Writes a SavedModel whose serving signature is batch 1, static, with named outputs.

    Args:
      model: tf_keras.Model (float or QAT-wrapped) taking float32 [B, H, W, 3] in the float
        range and returning [box_encodings [B, N, 4], class_logits [B, N, C]].
      input_height, input_width: model input size in pixels.
      path: output directory (created).
    """
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([1, input_height, input_width, 3], tf.float32, name="image")])
    def serve(image):
        outputs = model(image, training=False)
        if isinstance(outputs, dict):
            outputs = [outputs["box_encodings"], outputs["class_logits"]]
        return {"box_encodings": tf.identity(outputs[0], name="box_encodings"),
                "class_logits": tf.identity(outputs[1], name="class_logits")}

    module = tf.Module()
    module.model = model
    module.serve = serve
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve})


def to_float_tflite(saved_model_dir):
    """Float32 TFLite of a SavedModel (the reference twin); returns the flatbuffer bytes."""
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    return converter.convert()


def calibration_inputs(images_rgb, input_height, input_width, input_range=preprocess.INPUT_RANGE,
                       resize="bilinear"):
    """Representative-dataset generator factory: RGB uint8 images -> the model's float input.

    Args:
      images_rgb: sequence of RGB uint8 [H, W, 3] images (any size).
      input_height, input_width: model input size.
      input_range: the float range the model was trained on.
      resize: the app.model.preprocess.RESIZE_METHODS entry it was trained with.

    Returns:
      A zero-argument callable yielding [float32 [1, H, W, 3]] per image, as the converter wants.
    """
    def gen():
        for i, image in enumerate(images_rgb):
            x = preprocess.image_to_float_input(image, input_height, input_width, input_range, resize)
            if i == 0:
                x = _pin_input_range(x, input_range)
            yield [x]
    return gen


def _pin_input_range(x, input_range):
    """Sets two pixels of one sample to the ends of the float range.

    The converter calibrates the input quantization from the min/max it sees. Eval
    images rarely contain both pure black and pure white in every channel, and then
    raw uint8 pixels would no longer map exactly onto the input range (e.g. scale
    0.00772, zero point 129 instead of 2/255, 128). Two pixels of one sample do not
    move any activation range measurably.
    """
    x = np.array(x, dtype=np.float32, copy=True)
    x[0, 0, 0, :] = input_range[0]
    x[0, -1, -1, :] = input_range[1]
    return x


def to_int8_tflite(saved_model_dir, representative_dataset, float_outputs=False,
                   allow_custom_ops=False):
    """Full-integer TFLite: uint8 input and outputs, TFLITE_BUILTINS_INT8 only; returns bytes.

    Args:
      saved_model_dir: batch-1 SavedModel (a QAT one carries its learned ranges).
      representative_dataset: zero-argument callable yielding [float32 model input] lists.
      float_outputs: float32 outputs instead of uint8 (for a TFLite_Detection_PostProcess tail,
        which computes in float).
      allow_custom_ops: keep custom ops such as TFLite_Detection_PostProcess.
    """
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.allow_custom_ops = allow_custom_ops
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative_dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.uint8
    converter.inference_output_type = tf.float32 if float_outputs else tf.uint8
    return converter.convert()


def _interpreter(model_content):
    from ai_edge_litert.interpreter import Interpreter
    return Interpreter(model_content=model_content)


def quantization_params(model_content):
    """Input and output (scale, zero_point) and dtypes of a .tflite, for model.json and the report.

    Returns:
      dict: input {name, dtype, shape, scale, zero_point}, outputs [same for each output].
    """
    interp = _interpreter(model_content)

    def describe(d):
        return {"name": d["name"], "dtype": np.dtype(d["dtype"]).name, "shape": [int(s) for s in d["shape"]],
                "scale": float(d["quantization"][0]), "zero_point": int(d["quantization"][1])}
    return {"input": describe(interp.get_input_details()[0]),
            "outputs": [describe(d) for d in interp.get_output_details()]}


def check_full_integer(model_content, input_range=preprocess.INPUT_RANGE, scale_rtol=0.01):
    """Raises ConversionCheckError unless the model is a proper uint8 model for `input_range`.

    Checks: uint8 input and outputs; input (scale, zero_point) ~ expected_input_quantization
    (2/255, 127|128 for [-1, 1]); no -1 in any shape_signature; no float32 tensor used by any op.
    """
    interp = _interpreter(model_content)
    inp = interp.get_input_details()[0]
    problems = []
    for d in [inp] + list(interp.get_output_details()):
        if np.dtype(d["dtype"]) != np.uint8:
            problems.append("tensor {} is {}, expected uint8".format(d["name"], np.dtype(d["dtype"]).name))
    problem = input_quantization_problem(inp, input_range, scale_rtol)
    if problem:
        problems.append(problem)
    tensors = interp.get_tensor_details()
    dynamic = [t["name"] for t in tensors if -1 in list(t.get("shape_signature", t["shape"]))]
    if dynamic:
        problems.append("dynamic shapes (-1 in shape_signature) in {} tensors, e.g. {}".format(
            len(dynamic), dynamic[:3]))
    floats = tflite_model.float_ops(interp)
    if floats:
        problems.append("{} op(s) still compute in float between input and outputs: {}".format(
            len(floats), sorted(set(floats))))
    if problems:
        raise ConversionCheckError("; ".join(problems))


def input_quantization_problem(input_detail, input_range=preprocess.INPUT_RANGE, scale_rtol=0.01):
    """One line when an input's (scale, zero_point) does not map 0..255 onto `input_range`, else None.

    Args:
      input_detail: the interpreter's input detail (its "quantization" is read).
      input_range: the float range the model expects.
      scale_rtol: allowed relative scale error; the zero point may be off by half a code.
    """
    want_scale, want_zero = preprocess.expected_input_quantization(input_range)
    scale, zero = float(input_detail["quantization"][0]), int(input_detail["quantization"][1])
    if abs(scale - want_scale) <= scale_rtol * want_scale and abs(zero - want_zero) <= 0.51:
        return None
    return ("input quantization is (scale {:.6g}, zero point {}), expected about ({:.6g}, {}): raw uint8 "
            "pixels would not map onto the float range {}. The representative data was not preprocessed "
            "like training (see `edgedet-train doctor`)".format(
                scale, zero, want_scale, " or ".join(str(z) for z in sorted({int(np.floor(want_zero)),
                                                                              int(np.ceil(want_zero))})),
                list(input_range)))
