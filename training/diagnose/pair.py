"""What the doctor compares: a float model and its quantized twin, and how to read them.

`--float` may be a bundle folder (model.json gives both files, the float range and
the anchors), a SavedModel folder (converted here to a float .tflite so both run
on one interpreter) or a .tflite. The pair is one of three kinds:
  * "raw_ssd": raw heads box_encodings [1, N, 4] + class_logits [1, N, C] (edgedet);
  * "postprocess": ends in TFLite_Detection_PostProcess (OD API, Coral zoo);
  * "generic": anything else with matching inputs and outputs (compared as arrays).
"""

import collections
import math
import os

import numpy as np

from app.errors import UserError
from training.diagnose.runner import TfliteRunner

Pair = collections.namedtuple(
    "Pair", "float_model quant_model float_label quant_path saved_model kind spec float_range "
            "range_source output_pairs")
Pair.__doc__ = """A loaded float/quantized pair.

float_model, quant_model: TfliteRunner. float_label: what --float named. quant_path: the quantized file.
saved_model: SavedModel dir or None. kind: "raw_ssd" | "postprocess" | "generic".
spec: evaluate.ModelSpec-like (anchors, box coder, score converter) for raw_ssd, else None.
float_range: (low, high) or None (to be estimated). range_source: "model.json" | "--float-range" | None.
output_pairs: [(float output name, quant output name)].
"""

RAW_KEYS = ("box_encodings", "class_logits")
EDGETPU_CUSTOM_OP = b"edgetpu-custom-op"


def parse_float_range(text):
    """"LO,HI" -> (lo, hi) finite floats with lo < hi; UserError otherwise."""
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        low = high = float("nan")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError("--float-range {!r}: expected LO,HI such as -1,1 or 0,1 or 0,255".format(text))
    if not low < high:
        raise UserError("--float-range {!r}: LO must be below HI".format(text))
    return low, high


def _read_tflite(path, flag):
    if not os.path.isfile(path):
        raise UserError("{} {}: no such file".format(flag, path))
    with open(path, "rb") as f:
        content = f.read()
    if content[4:8] != b"TFL3":
        raise UserError("{} {}: not a TFLite flatbuffer (no TFL3 identifier)".format(flag, path))
    if EDGETPU_CUSTOM_OP in content:
        raise UserError("{} {}: already compiled for the Edge TPU and cannot run on the CPU; pass the "
                        "file you gave edgetpu_compiler (without _edgetpu)".format(flag, path))
    return content


def _float_from_saved_model(saved_model_dir):
    try:
        from training.convert_tflite import to_float_tflite
    except ImportError:  # export's module not present: the same two converter calls
        def to_float_tflite(path):
            import tensorflow as tf
            return tf.lite.TFLiteConverter.from_saved_model(str(path)).convert()
    try:
        return to_float_tflite(saved_model_dir)
    except Exception as e:  # the converter raises many types; the user needs the message
        raise UserError("--float {}: TFLite converter failed on this SavedModel ({})".format(
            saved_model_dir, str(e).splitlines()[0] if str(e) else type(e).__name__))


def _raw_names(runner):
    """{"box_encodings"|"class_logits": output name} if the model has raw SSD heads, else None."""
    found = {}
    for key in RAW_KEYS:
        hits = [n for n in runner.output_names if key in n]
        if len(hits) == 1:
            found[key] = hits[0]
    if len(found) == 2:
        return found
    # Unnamed outputs (a Keras model converted directly): [1, N, 4] and [1, N, C], C != 4.
    shapes = {n: list(runner.output_detail(n)["shape"]) for n in runner.output_names}
    boxes = [n for n, s in shapes.items() if len(s) == 3 and s[2] == 4]
    others = [n for n, s in shapes.items() if n not in boxes and len(s) == 3]
    if len(shapes) == 2 and len(boxes) == 1 and len(others) == 1 and \
            shapes[boxes[0]][1] == shapes[others[0]][1]:
        return {"box_encodings": boxes[0], "class_logits": others[0]}
    return None


def _item_shape(runner, name):
    """An output's shape without its batch dimension (a batch-N model is still the same model)."""
    return list(runner.output_detail(name)["shape"])[1:]


def match_outputs(float_model, quant_model):
    """[(float name, quant name)]: by name when the sets agree, else by position and shape."""
    f_names, q_names = float_model.output_names, quant_model.output_names
    if sorted(f_names) == sorted(q_names):
        return [(n, n) for n in q_names]
    f_raw, q_raw = _raw_names(float_model), _raw_names(quant_model)
    if f_raw and q_raw and all(_item_shape(float_model, f_raw[k]) == _item_shape(quant_model, q_raw[k])
                               for k in RAW_KEYS):
        return [(f_raw[k], q_raw[k]) for k in RAW_KEYS]
    shapes = [(_item_shape(float_model, a), _item_shape(quant_model, b)) for a, b in zip(f_names, q_names)]
    if len(f_names) != len(q_names) or any(a != b for a, b in shapes):
        raise UserError("the float and quantized models have different outputs ({} vs {}); pass the "
                        "float model the quantized one was converted from".format(f_names, q_names))
    return list(zip(f_names, q_names))


def _spec_for(quant_model, bundle):
    """ModelSpec for raw SSD heads, or None.

    From the bundle when there is one. For bare files the anchors are guessed: the OD API's
    ssd_anchor_generator defaults, with the reduced first layer (the OD API's default) or the
    full one (edgedet's demo default), whichever has the model's anchor count.
    """
    from training.evaluate import ModelSpec
    if bundle is not None:
        return bundle
    raw = _raw_names(quant_model)
    if raw is None:
        return None
    from app.model import anchors, box_coder
    height, width = quant_model.input_size()
    num = int(quant_model.output_detail(raw["box_encodings"])["shape"][1])
    for reduced in (True, False):
        guess = anchors.ssd_anchors(height, width, reduce_boxes_in_lowest_layer=reduced)
        if len(guess) == num:
            return ModelSpec(height, width, None, guess, box_coder.DEFAULT_SCALES, "sigmoid", "bilinear")
    return None  # unknown anchor layout: compare as arrays only


def _kind(quant_model, spec):
    if spec is not None:
        return "raw_ssd"
    from app.model.postprocess import map_postprocess_outputs
    try:
        map_postprocess_outputs(quant_model.interp.get_output_details())
        return "postprocess"
    except ValueError:
        return "generic"


def load_pair(float_arg, quant_arg, float_range_text=None):
    """Loads the pair named on the command line.

    Args:
      float_arg: bundle dir, SavedModel dir or float .tflite.
      quant_arg: quantized .tflite, or None when float_arg is a bundle.
      float_range_text: "LO,HI" or None.

    Returns:
      Pair. Raises UserError for anything the user can fix.
    """
    bundle = saved_model = None
    float_range, source = None, None
    if os.path.isfile(os.path.join(float_arg, "model.json")):
        from app.model.bundle import load_bundle
        bundle = load_bundle(float_arg)
        if "float" not in bundle.models:
            raise UserError("{}: the bundle has no float model to compare against".format(float_arg))
        float_content = _read_tflite(bundle.models["float"].file, "--float")
        if quant_arg is None and "int8" in bundle.models:
            quant_arg = bundle.models["int8"].file
        float_range, source = bundle.float_range, "model.json"
    elif os.path.isfile(os.path.join(float_arg, "saved_model.pb")):
        saved_model = float_arg
        float_content = _float_from_saved_model(float_arg)
    elif os.path.isdir(float_arg):
        raise UserError("--float {}: a folder without model.json or saved_model.pb; pass a bundle, "
                        "a SavedModel or a .tflite".format(float_arg))
    else:
        float_content = _read_tflite(float_arg, "--float")
    if quant_arg is None:
        raise UserError("--quant is required unless --float is a bundle with model_int8.tflite")
    if float_range is None and float_range_text:
        float_range, source = parse_float_range(float_range_text), "--float-range"
    float_model = TfliteRunner(float_content, float_arg)
    quant_model = TfliteRunner(_read_tflite(quant_arg, "--quant"), quant_arg)
    if float_model.input_size() != quant_model.input_size():
        raise UserError("input sizes differ: float {} vs quantized {}; pass the matching pair".format(
            float_model.input_size(), quant_model.input_size()))
    pairs = match_outputs(float_model, quant_model)
    spec = _spec_for(quant_model, bundle)
    return Pair(float_model, quant_model, float_arg, quant_arg, saved_model, _kind(quant_model, spec),
                spec, float_range, source, pairs)


def raw_output_names(pair):
    """{"box_encodings"|"class_logits": (float name, quant name)} for a raw_ssd pair."""
    if pair.spec is not None and hasattr(pair.spec, "models"):  # a bundle: names from model.json
        f_out = pair.spec.models["float"].outputs
        q_out = pair.spec.models["int8"].outputs if "int8" in pair.spec.models else None
        by_tensor_f = {pair.float_model.output_detail(n)["name"]: n for n in pair.float_model.output_names}
        by_tensor_q = {pair.quant_model.output_detail(n)["name"]: n for n in pair.quant_model.output_names}
        if q_out and all(f_out[k] in by_tensor_f and q_out[k] in by_tensor_q for k in RAW_KEYS):
            return {k: (by_tensor_f[f_out[k]], by_tensor_q[q_out[k]]) for k in RAW_KEYS}
    f_raw, q_raw = _raw_names(pair.float_model), _raw_names(pair.quant_model)
    return {k: (f_raw[k], q_raw[k]) for k in RAW_KEYS}


def is_float_model(runner):
    """True if the model's input is float (a real float twin, not another quantized file)."""
    return np.dtype(runner.input_dtype).kind == "f"
