"""Reads the bundle that `edgedet-train convert-savedmodel` writes (model.json "kind": "postprocess").

Its two models are an OD API export converted twice: `model_int8_postprocess.tflite` runs live and
`model_float_postprocess.tflite`, from the same SavedModel, is the float reference. Both end in
TFLite_Detection_PostProcess, so the app reads their outputs as it reads any foreign model's, with
the bundle's labels; there are no anchors or raw head outputs to decode.
"""

import os
from dataclasses import dataclass

from app.model import bundle as raw_bundle
from app.errors import UserError

KIND = "postprocess"


@dataclass(frozen=True, eq=False)
class PostprocessBundle:
    """A loaded convert-savedmodel bundle; attribute names follow app.model.bundle.Bundle.

    path: absolute bundle directory.
    labels: list of class names; index = 0-based class id.
    input_height, input_width: model input size in pixels.
    float_range: (low, high) float input range of the float model.
    models: {"int8", "float"}: app.model.bundle.ModelFile. `outputs` is empty: post-processed outputs
      are found by signature, name and shape (app.model.postprocess).
    samples: absolute paths of the sample images (a few of the calibration images).
    raw: the model.json dict as read.
    """
    path: str
    labels: list
    input_height: int
    input_width: int
    float_range: tuple
    models: dict
    samples: list
    raw: dict
    kind = KIND


def kind_of(path):
    """model.json's "kind" of a bundle directory ("postprocess"), or None (an export bundle, or no bundle)."""
    where = os.path.join(path, "model.json")
    if not os.path.isfile(where):
        return None
    data = raw_bundle.read_model_json(where)
    return data.get("kind")


def _model_file(bundle_dir, data, key, where):
    entry = raw_bundle.get_key(data, key, dict, where)
    file = raw_bundle.existing_file(bundle_dir, raw_bundle.get_key(entry, "file", str, where), where, key + ".file")
    quant = entry.get("input_quantization")
    return raw_bundle.ModelFile(file=file, outputs={}, input_quantization=tuple(quant) if quant else None)


def load(path):
    """Loads and checks a convert-savedmodel bundle directory.

    Raises:
      UserError: a file or key is missing or malformed; the message names it and the fix.
    """
    bundle_dir = os.path.abspath(path)
    where = os.path.join(bundle_dir, "model.json")
    data = raw_bundle.read_model_json(where)
    if data.get("kind") != KIND:
        raise UserError("{}: 'kind' is {!r}, expected {!r}".format(where, data.get("kind"), KIND))
    height, width, float_range = raw_bundle.input_section(data, where)
    models = {"int8": _model_file(bundle_dir, data, "postprocess_model", where),
              "float": _model_file(bundle_dir, data, "float_postprocess_model", where)}
    return PostprocessBundle(path=bundle_dir, labels=raw_bundle.labels_section(bundle_dir, data, where),
                             input_height=height, input_width=width, float_range=float_range, models=models,
                             samples=raw_bundle.samples_section(bundle_dir, data, where), raw=data)
