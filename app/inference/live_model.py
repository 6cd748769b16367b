"""One interpreter as the live path uses it: frame in, raw outputs out, then Detections.

`InputWriter` turns a BGR frame into the input tensor's contents with as little work as the
tensor allows: stretch-resize, then BGR->RGB when its uint8 quantization already maps 0..255
onto the bundle's float range (the int8 model folded normalization into its input); XOR 128
for int8 inputs (same mapping shifted); `app.model.preprocess.normalize` only for float inputs.
Any other quantization gets the exact float path (normalize, then quantize) and a warning,
because it means the model was calibrated on a different range. `prepare` does this without
touching the interpreter (the pipeline runs it on the capture thread) and `load` copies the
result in.

`OutputReader` finds the raw head outputs BY NAME (the converter reorders outputs), and
`decode` turns them into `app.model.postprocess.Detections`.
"""

import logging
import os

import numpy as np

from app.model import postprocess, preprocess
from app.errors import UserError

log = logging.getLogger(__name__)


def _quantization(detail):
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero_point)


def input_mode(detail, float_range):
    """How a frame becomes this input tensor: "copy" | "xor" | "float" | "requantize".

    Args:
      detail: the interpreter's input detail dict (dtype, quantization).
      float_range: (low, high) the float model expects, from model.json.
    """
    dtype = np.dtype(detail["dtype"])
    if dtype == np.float32:
        return "float"
    scale, zero_point = _quantization(detail)
    want_scale, want_zero = preprocess.expected_input_quantization(float_range)
    if dtype == np.int8:
        want_zero -= 128.0  # int8 is uint8 shifted by 128
    matches = scale > 0 and abs(scale - want_scale) <= 0.01 * want_scale and abs(zero_point - want_zero) <= 1.0
    if matches and dtype == np.uint8:
        return "copy"
    if matches and dtype == np.int8:
        return "xor"
    if dtype in (np.uint8, np.int8):
        return "requantize"
    raise UserError("model input dtype {} is not supported; expected uint8, int8 or float32".format(dtype))


class InputWriter(object):
    """Writes BGR frames into an interpreter's input tensor.

    Args:
      interpreter: an allocated TFLite interpreter with one [1, H, W, 3] input.
      float_range: (low, high) float input range of the model family.
      resize: app.model.preprocess.RESIZE_METHODS entry the model was trained with.
    """

    def __init__(self, interpreter, float_range=preprocess.INPUT_RANGE, resize="bilinear"):
        detail = interpreter.get_input_details()[0]
        shape = tuple(int(v) for v in detail["shape"])
        if len(shape) != 4 or shape[0] != 1 or shape[3] != 3:
            raise UserError("model input shape {}: expected [1, height, width, 3]".format(list(shape)))
        self.height, self.width = shape[1], shape[2]
        self.mode = input_mode(detail, float_range)
        self.quantization = _quantization(detail)
        self._dtype = np.dtype(detail["dtype"])
        self._float_range = float_range
        self._resize = resize
        self._tensor = interpreter.tensor(detail["index"])
        # What a prepared input depends on: `prepare`d arrays fit any writer with an equal layout.
        self.layout = (self.height, self.width, self.mode, self._dtype.str, self.quantization,
                       tuple(float_range), resize)
        if self.mode == "requantize":
            log.warning("model input quantization (scale %.6g, zero point %d) does not map 0..255 onto %s: "
                        "the model was calibrated on another input range; using the slow exact path",
                        self.quantization[0], self.quantization[1], list(float_range))

    def prepare(self, image_bgr):
        """The input tensor's next contents for a BGR frame, as a new [H, W, 3] array.

        Touches no interpreter, so the capture thread can run it while the interpreter is busy
        with the previous frame; `load` then only copies.
        """
        import cv2
        if self.mode in ("copy", "xor"):
            resized = preprocess.resize_to_input(image_bgr, self.height, self.width, self._resize)
            if self.mode == "copy":
                return cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
            return np.bitwise_xor(preprocess.bgr_to_rgb(resized), 128).view(np.int8)
        resized = preprocess.resize_to_float(image_bgr, self.height, self.width, self._resize)
        pixels = preprocess.normalize(preprocess.bgr_to_rgb(resized), self._float_range)
        if self.mode == "float":
            return pixels
        scale, zero_point = self.quantization
        info = np.iinfo(self._dtype)
        return np.clip(np.round(pixels / scale + zero_point), info.min, info.max).astype(self._dtype)

    def load(self, prepared):
        """Copies a `prepare`d array (of a writer with the same layout) into the input tensor."""
        view = self._tensor()[0]  # the tensor's own memory; dropped before invoke
        view[...] = prepared
        del view

    def write(self, image_bgr):
        """Resizes `image_bgr` (uint8 [h, w, 3]) and stores it as the next input."""
        self.load(self.prepare(image_bgr))

    def write_prepared(self, prepared, image_bgr):
        """Loads `prepared` = (layout, array) if it was made for this writer's layout, else writes
        `image_bgr` (a frame prepared for another model, e.g. just before a float fallback).

        Returns:
          True if the prepared array was used.
        """
        if prepared is not None and prepared[0] == self.layout:
            self.load(prepared[1])
            return True
        self.write(image_bgr)
        return False


class OutputReader(object):
    """Reads the raw head outputs of a bundle model, found by their tensor names.

    Args:
      interpreter: the allocated interpreter.
      names: {"box_encodings": tensor name, "class_logits": tensor name} from model.json.
      model_path: for error messages.
    """

    def __init__(self, interpreter, names, model_path):
        details = {d["name"]: d for d in interpreter.get_output_details()}
        self._outputs = {}
        for role in ("box_encodings", "class_logits"):
            name = names.get(role)
            if name not in details:
                raise UserError("{}: model.json names output {} = {!r}, but the model's outputs are {}. "
                                "Re-export the bundle".format(model_path, role, name, sorted(details)))
            detail = details[name]
            quant = _quantization(detail) if np.dtype(detail["dtype"]) != np.float32 else None
            self._outputs[role] = (detail["index"], quant, tuple(int(v) for v in detail["shape"]))
        self._get = interpreter.get_tensor

    def shape(self, role):
        return self._outputs[role][2]

    def read(self):
        """(box_encodings, class_logits) raw arrays, copied out of the interpreter."""
        return tuple(self._get(self._outputs[r][0]) for r in ("box_encodings", "class_logits"))

    def quantization(self, role):
        """(scale, zero_point) of an integer output, None for float."""
        return self._outputs[role][1]


def check_labels(reader, labels, model_path):
    """UserError unless the model's class count equals the number of labels."""
    classes = reader.shape("class_logits")[-1]
    if classes != len(labels):
        raise UserError("{}: the model predicts {} classes but there are {} labels ({}). Use the label "
                        "file the model was trained with".format(model_path, classes, len(labels),
                                                                 ", ".join(labels[:6])))


def bundle_worker(engine, bundle, key, thresholds):
    """An opened bundle model wired for the live path: an app.pipeline.threads.Worker.

    Args:
      engine: app.inference.runtime.Engine running the bundle's model `key`.
      bundle: app.model.bundle.Bundle.
      key: "edgetpu" | "int8" | "float", the model.json entry whose output names are read.
      thresholds: decode_ssd keyword arguments.
    """
    from app.pipeline.threads import Worker
    reader = OutputReader(engine.interpreter, bundle.models[key].outputs, engine.model_path)
    writer = InputWriter(engine.interpreter, bundle.float_range, bundle.resize)
    return Worker(engine.interpreter, writer, reader, BundleDecoder(reader, bundle, thresholds), key)


class BundleDecoder(object):
    """Raw head outputs -> Detections with the bundle's anchors, box coder and thresholds.

    Args:
      reader: OutputReader of the live interpreter.
      bundle: app.model.bundle.Bundle (anchors, box_coder_scales, score_converter).
      thresholds: dict of decode_ssd keyword arguments (score_threshold, iou_threshold,
        max_detections, max_detections_per_class, class_score_thresholds by class id).
    """

    def __init__(self, reader, bundle, thresholds):
        self._reader = reader
        self._anchors = bundle.anchors
        self._scales = tuple(bundle.box_coder_scales)
        self._converter = bundle.score_converter
        self._thresholds = dict(thresholds)
        num = reader.shape("box_encodings")[-2]
        if num != len(self._anchors):
            raise UserError("{}: the model has {} anchors but anchors.npy has {}. Re-export the bundle"
                            .format(bundle.path, num, len(self._anchors)))

    def decode(self, raw):
        """raw = OutputReader.read() -> Detections (normalized ymin, xmin, ymax, xmax)."""
        boxes, logits = raw
        return postprocess.decode_ssd(
            boxes, logits, self._anchors, box_coder_scales=self._scales, score_converter=self._converter,
            box_quantization=self._reader.quantization("box_encodings"),
            logit_quantization=self._reader.quantization("class_logits"), **self._thresholds)


class ForeignReader(object):
    """Reads every output of a model ending in TFLite_Detection_PostProcess (Coral zoo, OD API exports).

    Args:
      interpreter: the allocated interpreter.
      model_path: for error messages.
    """

    def __init__(self, interpreter, model_path):
        self.details = interpreter.get_output_details()
        self.signature = postprocess.signature_outputs(interpreter)
        try:
            postprocess.map_postprocess_outputs(self.details, self.signature)
        except ValueError as e:
            raise UserError("{}: not an SSD model ending in TFLite_Detection_PostProcess ({}). Pass a bundle "
                            "directory instead".format(model_path, e))
        self._get = interpreter.get_tensor

    def read(self):
        """Every output array, in output-detail order (copies)."""
        return [self._get(d["index"]) for d in self.details]


class ForeignDecoder(object):
    """Foreign post-processed outputs -> Detections, with score thresholds and max_detections.

    Args:
      reader: ForeignReader of the live interpreter.
      thresholds: dict with score_threshold, max_detections and optional class_score_thresholds
        (by class id); NMS already ran inside the model, so iou settings do not apply.
    """

    def __init__(self, reader, thresholds):
        self._reader = reader
        self._kwargs = {k: thresholds[k] for k in ("score_threshold", "class_score_thresholds", "max_detections")
                        if k in thresholds}

    def decode(self, raw):
        return postprocess.decode_postprocess_outputs(self._reader.details, raw, self._reader.signature,
                                                      **self._kwargs)


def foreign_worker(engine, thresholds, name=None):
    """An opened model ending in TFLite_Detection_PostProcess wired for the live path.

    Args:
      engine: app.inference.runtime.Engine running the model.
      thresholds: dict with score_threshold, max_detections, class_score_thresholds (by class id).
      name: the Worker's model name; default the file name ("float" for a float reference).
    """
    from app.pipeline.threads import Worker
    reader = ForeignReader(engine.interpreter, engine.model_path)
    writer = InputWriter(engine.interpreter)
    return Worker(engine.interpreter, writer, reader, ForeignDecoder(reader, thresholds),
                  name or os.path.basename(engine.model_path))
