"""Reads a bundle directory, `models/<name>/` (format version 1; see docs/architecture.md).

The bundle is the only thing that passes from training to the app, and the app
guesses nothing: every value it needs is read and checked here once. Anything
missing or inconsistent is a `UserError` naming the file, the key and the fix.
Export writes bundles; this module only reads them.
"""

import json
import os
from dataclasses import dataclass

import numpy as np

from app.config import PostprocessConfig
from app.errors import UserError
from app.model.labels import read_labels

FORMAT_VERSION = 1
MODEL_KINDS = ("float", "int8", "edgetpu")
OUTPUT_ROLES = ("box_encodings", "class_logits")
_REEXPORT = "Re-export the bundle with `edgedet-train export`"


@dataclass(frozen=True)
class ModelFile:
    """One .tflite file of a bundle.

    file: absolute path of the .tflite file.
    outputs: {"box_encodings": tensor name, "class_logits": tensor name}.
    input_quantization: (scale, zero_point) of the uint8 input, or None.
    """
    file: str
    outputs: dict
    input_quantization: tuple = None


@dataclass(frozen=True, eq=False)
class Bundle:
    """A loaded bundle. Boxes/anchors follow the conventions in docs/architecture.md.

    path: absolute bundle directory.
    labels: list of class names; index = 0-based class id.
    input_height, input_width: model input size in pixels.
    float_range: (low, high) float input range of the float model.
    anchors: float32 [N, 4] (ycenter, xcenter, height, width), normalized.
    box_coder_scales: (y, x, height, width) faster_rcnn_box_coder scales.
    score_converter: "sigmoid" | "softmax".
    models: {"float" | "int8" | "edgetpu": ModelFile}; only the kinds present.
    postprocess: {"score_threshold", "iou_threshold", "max_detections",
      "max_detections_per_class", "class_agnostic_nms"} from model.json, defaults filled in.
    samples: absolute paths of the sample images.
    raw: the model.json dict as read.
    postprocess_model: absolute path of the optional model ending in
      TFLite_Detection_PostProcess (model.json "postprocess_model": {"file": ...}), or None.
    resize: app.model.preprocess.RESIZE_METHODS entry (model.json input.resize_method; bilinear if absent).
    """
    path: str
    labels: list
    input_height: int
    input_width: int
    float_range: tuple
    anchors: np.ndarray
    box_coder_scales: tuple
    score_converter: str
    models: dict
    postprocess: dict
    samples: list
    raw: dict
    postprocess_model: str = None
    resize: str = "bilinear"


def get_key(mapping, dotted, kind, where):
    """mapping[a][b]... for "a.b"; UserError naming `where` and the key if missing or mistyped."""
    value = mapping
    for key in dotted.split("."):
        if not isinstance(value, dict) or key not in value:
            raise UserError("{}: missing key '{}'. {}.".format(where, dotted, _REEXPORT))
        value = value[key]
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if not ok:
        names = getattr(kind, "__name__", None) or "/".join(k.__name__ for k in kind)
        raise UserError("{}: key '{}' must be {}, got {!r}. {}.".format(
            where, dotted, names, value, _REEXPORT))
    return value


def read_model_json(path):
    if not os.path.isfile(path):
        raise UserError("{}: not found. Pass --model with a bundle folder written by "
                        "`edgedet-train export`, or a .tflite file.".format(path))
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise UserError("{}: invalid JSON ({}). {}.".format(path, e, _REEXPORT))
    except (IOError, OSError) as e:
        raise UserError("{}: cannot read ({}).".format(path, e.strerror or e))
    if not isinstance(data, dict):
        raise UserError("{}: expected a JSON object at the top level. {}.".format(path, _REEXPORT))
    return data


def existing_file(bundle_dir, relative, where, key):
    full = os.path.join(bundle_dir, relative)
    if not os.path.isfile(full):
        raise UserError("{}: '{}' names {}, which does not exist. Copy the whole bundle folder, or {}."
                        .format(where, key, full, _REEXPORT.lower()))
    return full


def _model_file(bundle_dir, kind, entry, where):
    key = "models.{}".format(kind)
    if not isinstance(entry, dict):
        raise UserError("{}: key '{}' must be an object. {}.".format(where, key, _REEXPORT))
    file = existing_file(bundle_dir, get_key(entry, "file", str, where), where, key + ".file")
    outputs = {}
    for role in OUTPUT_ROLES:
        outputs[role] = get_key(entry, "outputs." + role, str, where + " (" + key + ")")
    quant = entry.get("input_quantization")
    if quant is not None:
        if (not isinstance(quant, list) or len(quant) != 2
                or not all(isinstance(v, (int, float)) for v in quant) or not quant[0] > 0):
            raise UserError("{}: key '{}.input_quantization' must be [scale > 0, zero_point], got {!r}. {}."
                            .format(where, key, quant, _REEXPORT))
        quant = (float(quant[0]), int(quant[1]))
    return ModelFile(file=file, outputs=outputs, input_quantization=quant)


def _models(bundle_dir, data, where):
    models = get_key(data, "models", dict, where)
    unknown = sorted(set(models) - set(MODEL_KINDS))
    if unknown:
        raise UserError("{}: unknown model kind(s) {} under 'models'; expected {}. {}."
                        .format(where, unknown, "|".join(MODEL_KINDS), _REEXPORT))
    if "float" not in models and "int8" not in models:
        raise UserError("{}: 'models' has neither 'float' nor 'int8'. {}.".format(where, _REEXPORT))
    return {kind: _model_file(bundle_dir, kind, models[kind], where) for kind in MODEL_KINDS
            if kind in models}


def labels_section(bundle_dir, data, where):
    labels = get_key(data, "labels", list, where)
    if not labels or not all(isinstance(name, str) and name for name in labels):
        raise UserError("{}: 'labels' must be a non-empty list of names, got {!r}. {}."
                        .format(where, labels, _REEXPORT))
    labels_txt = os.path.join(bundle_dir, "labels.txt")
    if os.path.exists(labels_txt):
        from_file = read_labels(labels_txt)
        if from_file != dict(enumerate(labels)):
            raise UserError("{}: {} classes {} do not match model.json labels {}. Restore labels.txt "
                            "from the export or {}.".format(labels_txt, len(from_file),
                                                            list(from_file.values()), labels,
                                                            _REEXPORT.lower()))
    return list(labels)


def _anchors(bundle_dir, data, where):
    num_anchors = get_key(data, "num_anchors", int, where)
    path = os.path.join(bundle_dir, "anchors.npy")
    if not os.path.isfile(path):
        raise UserError("{}: not found; the app decodes boxes against it. {}.".format(path, _REEXPORT))
    try:
        anchors = np.load(path, allow_pickle=False)
    except (IOError, OSError, ValueError) as e:
        raise UserError("{}: unreadable ({}). {}.".format(path, e, _REEXPORT))
    if anchors.ndim != 2 or anchors.shape[1] != 4 or anchors.dtype.kind != "f":
        raise UserError("{}: expected float [N, 4] (ycenter, xcenter, h, w), got {} {}. {}."
                        .format(path, anchors.dtype, anchors.shape, _REEXPORT))
    if len(anchors) != num_anchors:
        raise UserError("{}: holds {} anchors but model.json 'num_anchors' is {}. {}."
                        .format(path, len(anchors), num_anchors, _REEXPORT))
    return anchors.astype(np.float32)


def _box_coder_scales(data, where):
    keys = ("y_scale", "x_scale", "height_scale", "width_scale")
    scales = tuple(float(get_key(data, "box_coder." + k, (int, float), where)) for k in keys)
    if min(scales) <= 0:
        raise UserError("{}: 'box_coder' scales must be > 0, got {}. {}.".format(where, scales, _REEXPORT))
    return scales


def _postprocess(data, where):
    defaults = PostprocessConfig()
    kinds = {"score_threshold": (int, float), "iou_threshold": (int, float),
             "max_detections": int, "max_detections_per_class": int, "class_agnostic_nms": bool}
    section = data.get("postprocess") or {}
    result = {}
    for key, kind in kinds.items():
        result[key] = (get_key(section, key, kind, where + " (postprocess)") if key in section
                       else getattr(defaults, key))
    return result


def input_section(data, where):
    height = get_key(data, "input.height", int, where)
    width = get_key(data, "input.width", int, where)
    float_range = get_key(data, "input.float_range", list, where)
    numbers = [v for v in float_range if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if height <= 0 or width <= 0 or len(float_range) != 2 or len(numbers) != 2 or not numbers[0] < numbers[1]:
        raise UserError("{}: 'input' needs height and width > 0 and float_range [low, high] with low < high, "
                        "got {!r}. {}.".format(where, data["input"], _REEXPORT))
    return height, width, (float(numbers[0]), float(numbers[1]))


def _resize_method(data, where):
    """input.resize_method, optional (bundles written before it existed are bilinear)."""
    from app.model.preprocess import RESIZE_METHODS
    if "resize_method" not in data["input"]:
        return "bilinear"
    method = get_key(data, "input.resize_method", str, where)
    if method not in RESIZE_METHODS:
        raise UserError("{}: 'input.resize_method' must be one of {}, got {!r}. {}."
                        .format(where, " | ".join(RESIZE_METHODS), method, _REEXPORT))
    return method


def _postprocess_model(bundle_dir, data, where):
    """Absolute path of the optional TFLite_Detection_PostProcess variant, or None."""
    if "postprocess_model" not in data:
        return None
    key = "postprocess_model.file"
    return existing_file(bundle_dir, get_key(data, key, str, where), where, key)


def samples_section(bundle_dir, data, where):
    """Absolute paths of model.json's "samples" (the start-up check's images); [] when absent."""
    if "samples" not in data:
        return []
    return [existing_file(bundle_dir, s, where, "samples") for s in get_key(data, "samples", list, where)]


def load_bundle(path):
    """Loads and checks a bundle directory.

    Args:
      path: the bundle directory (holding model.json, anchors.npy and the .tflite files).

    Returns:
      Bundle (frozen).

    Raises:
      UserError: a file or key is missing, malformed or inconsistent; the message
        names the file and key and says how to fix it.
    """
    bundle_dir = os.path.abspath(path)
    if not os.path.isdir(bundle_dir):
        raise UserError("{}: no such bundle directory. Pass --model with a folder written by "
                        "`edgedet-train export` (e.g. models/demo), or a .tflite file.".format(path))
    where = os.path.join(bundle_dir, "model.json")
    data = read_model_json(where)
    if data.get("kind") == "postprocess":
        raise UserError("{}: a bundle of models ending in TFLite_Detection_PostProcess (convert-savedmodel); "
                        "only `edgedet --model {}` runs it".format(where, path))
    version = data.get("format_version")
    if version != FORMAT_VERSION:
        raise UserError("{}: 'format_version' is {!r}; this app reads version {}. {}."
                        .format(where, version, FORMAT_VERSION, _REEXPORT))
    height, width, float_range = input_section(data, where)
    converter = get_key(data, "score_converter", str, where)
    if converter not in ("sigmoid", "softmax"):
        raise UserError("{}: 'score_converter' must be sigmoid or softmax, got {!r}. {}."
                        .format(where, converter, _REEXPORT))
    return Bundle(path=bundle_dir, labels=labels_section(bundle_dir, data, where), input_height=height,
                  input_width=width, float_range=float_range, anchors=_anchors(bundle_dir, data, where),
                  box_coder_scales=_box_coder_scales(data, where), score_converter=converter,
                  models=_models(bundle_dir, data, where), postprocess=_postprocess(data, where),
                  samples=samples_section(bundle_dir, data, where), raw=data,
                  postprocess_model=_postprocess_model(bundle_dir, data, where),
                  resize=_resize_method(data, where))
