"""The detection-postprocess variant: an SSD that ends in TFLite_Detection_PostProcess.

pycoral-, Frigate- and OD-API-style tooling expect a .tflite whose four outputs are
finished detections (boxes, classes, scores, count). This module builds that model
the way the OD API's `export_tflite_graph_tf2.py` does: a SavedModel whose serving
signature takes `input` (float32 [1, H, W, 3], already normalized to the float range)
and runs the float SSD, a sigmoid on the logits, and a placeholder function annotated
with `experimental_implements="TFLite_Detection_PostProcess"` that the TFLite converter
replaces by the custom op. The anchors are a float constant and stay float in the
converted model; the op's outputs are float32.

The op's score input may have num_classes or num_classes + 1 columns: the TFLite
kernel skips (columns - num_classes) leading columns as background. OD API SSDs emit a
background column, so one is added here (all zeros: never a detection), which keeps
the SavedModel interchangeable with an OD API export.
"""

import collections
import os

import numpy as np

from app.model import box_coder, preprocess

# TFLite_Detection_PostProcess settings (names as the op's attributes / the OD API).
# use_regular_nms=True is per-class NMS, the same semantics as app.model.postprocess.decode_ssd
# (per_class_nms). Fast NMS (False, one class per box, class-agnostic suppression, the
# OD API default) drops a second class proposed on the same object, which per-class NMS
# keeps: on the demo bundle that cut agreement with the bundle's own decode to 0.79. So the
# op gets fast NMS exactly when the config asks for class_agnostic_nms.
# Caution, measured with ai_edge_litert 2.3.0: the op's regular NMS run with num_threads=2
# drops the last class on this 3-class model (1, 3, 4 and 8 threads are fine, and so was
# fast NMS at every count tried): the classes seem to be split across threads by integer
# division. Run such a model with one thread, or with a count that divides num_classes.
NmsSettings = collections.namedtuple(
    "NmsSettings", "max_detections score_threshold iou_threshold detections_per_class use_regular_nms")
NmsSettings.__new__.__defaults__ = (True,)

POSTPROCESS_FILE = "model_int8_postprocess.tflite"


def implements_signature(num_classes, nms, box_coder_scales=box_coder.DEFAULT_SCALES):
    """The `experimental_implements` string the converter turns into TFLite_Detection_PostProcess.

    Args:
      num_classes: real classes (no background).
      nms: NmsSettings.
      box_coder_scales: (y, x, height, width) faster_rcnn_box_coder scales.
    """
    if num_classes < 1:
        raise ValueError("num_classes must be >= 1, got {!r}".format(num_classes))
    if not (0.0 <= nms.score_threshold <= 1.0 and 0.0 < nms.iou_threshold <= 1.0 and nms.max_detections >= 1):
        raise ValueError("expected score_threshold in [0, 1], iou_threshold in (0, 1], max_detections >= 1, "
                         "got {}".format(nms))
    y, x, h, w = (float(s) for s in box_coder_scales)
    # As the OD API's export_tflite_graph_tf2.py writes it: detections_per_class only matters to
    # regular NMS, and its fast-NMS export (the fixture's real saved_model/) has none.
    per_class = [("detections_per_class", "i", int(nms.detections_per_class))] if nms.use_regular_nms else []
    attrs = [("max_detections", "i", int(nms.max_detections)), ("max_classes_per_detection", "i", 1)] + per_class + [
             ("use_regular_nms", "b", "true" if nms.use_regular_nms else "false"),
             ("nms_score_threshold", "f", float(nms.score_threshold)),
             ("nms_iou_threshold", "f", float(nms.iou_threshold)),
             ("y_scale", "f", y), ("x_scale", "f", x), ("h_scale", "f", h), ("w_scale", "f", w),
             ("num_classes", "i", int(num_classes))]
    return " ".join(['name: "TFLite_Detection_PostProcess"'] +
                    ['attr {{ key: "{}" value {{ {}: {} }} }}'.format(k, t, v) for k, t, v in attrs])


def _network_fn(network):
    """Callable float [1, H, W, 3] -> (box_encodings [1, N, 4], class_logits [1, N, C]).

    `network` is a tf_keras model or a loaded edgedet SavedModel (its `serve` function).
    """
    def call(image):
        if hasattr(network, "serve"):
            outputs = network.serve(image)
        else:
            outputs = network(image, training=False)
        if isinstance(outputs, dict):
            return outputs["box_encodings"], outputs["class_logits"]
        return outputs[0], outputs[1]
    return call


def build_module(network, anchors, num_classes, input_height, input_width, nms,
                 box_coder_scales=box_coder.DEFAULT_SCALES):
    """A tf.Module whose `serve(input)` is the OD API TFLite-export signature.

    Args:
      network: tf_keras model or loaded edgedet SavedModel: float32 [1, H, W, 3] in the float
        range -> box_encodings [1, N, 4] (ty, tx, th, tw), class_logits [1, N, C] (sigmoid logits).
      anchors: float [N, 4] (ycenter, xcenter, height, width), normalized.
      num_classes: C.
      input_height, input_width: model input size in pixels.
      nms: NmsSettings.
      box_coder_scales: (y, x, height, width).

    Returns:
      tf.Module; `serve(input)` returns (count [1], scores [1, M], classes [1, M] 0-based,
      boxes [1, M, 4] ymin, xmin, ymax, xmax), M = nms.max_detections: the op's outputs in
      the order the OD API's TF2 exporter returns them.
    """
    import tensorflow as tf
    anchors = np.asarray(anchors, np.float32)
    if anchors.ndim != 2 or anchors.shape[1] != 4:
        raise ValueError("anchors must be [N, 4], got shape {}".format(anchors.shape))
    signature = implements_signature(num_classes, nms, box_coder_scales)

    # The converter replaces this function by the custom op; its body never runs in TFLite.
    @tf.function(experimental_implements=signature)
    def detection_postprocess(box_encodings, class_predictions, anchor_boxes):
        del box_encodings, class_predictions, anchor_boxes
        return (tf.constant(0.0, name="boxes"), tf.constant(0.0, name="classes"),
                tf.constant(0.0, name="scores"), tf.constant(0.0, name="num_detections"))

    call = _network_fn(network)

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, input_height, input_width, 3], tf.float32,
                                                    name="input")])
        def serve(self, input):  # noqa: A002 - the OD API's input name
            codes, logits = call(input)
            scores = tf.sigmoid(logits)
            background = tf.zeros_like(scores[:, :, :1])
            outputs = detection_postprocess(codes, tf.concat([background, scores], axis=2),
                                            tf.constant(anchors, name="anchors"))
            # Reversed like the OD API exporter: signature output_0..3 = count, scores, classes, boxes.
            return outputs[::-1]

    module = Detector()
    module.network = network
    return module


def save_savedmodel(module, path):
    """Writes `module` as a SavedModel whose serving_default is `serve` (the input is `input`)."""
    import tensorflow as tf
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})


def load_network(saved_model_dir):
    """The float network of an edgedet bundle's saved_model/ (a restored module with `serve`)."""
    import tensorflow as tf
    return tf.saved_model.load(str(saved_model_dir))


def convert(saved_model_dir, representative_dataset=None):
    """TFLite of a SavedModel ending in TFLite_Detection_PostProcess; returns the flatbuffer bytes.

    Args:
      saved_model_dir: SavedModel with the OD API TFLite-export signature.
      representative_dataset: zero-argument callable yielding [float32 [1, H, W, 3]] in the
        float range. With it: uint8 input, int8 body, float32 post-processing outputs (the
        op computes in float and the anchors stay float). Without it: a float model.
    """
    if representative_dataset is not None:
        from training.convert_tflite import to_int8_tflite
        return to_int8_tflite(saved_model_dir, representative_dataset, float_outputs=True,
                              allow_custom_ops=True)
    import tensorflow as tf
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir))
    converter.allow_custom_ops = True
    return converter.convert()


def check_converted(model_content, input_range=preprocess.INPUT_RANGE, quantized=True, scale_rtol=0.01):
    """Problems with a converted postprocess model, as one-line strings (empty list: fine).

    Checks: exactly one TFLite_Detection_PostProcess op whose anchors input is float32;
    four float32 outputs; for a quantized model, a uint8 input whose quantization maps
    0..255 onto `input_range`.
    """
    from ai_edge_litert.interpreter import Interpreter
    interp = Interpreter(model_content=model_content)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] == "TFLite_Detection_PostProcess"]
    problems = []
    if len(ops) != 1:
        problems.append("expected one TFLite_Detection_PostProcess op, found {}".format(len(ops)))
    elif np.dtype(tensors[ops[0]["inputs"][2]]["dtype"]) != np.float32:
        problems.append("the anchors were quantized to {}; they must stay float32".format(
            np.dtype(tensors[ops[0]["inputs"][2]]["dtype"]).name))
    outputs = interp.get_output_details()
    if len(outputs) != 4 or any(np.dtype(d["dtype"]) != np.float32 for d in outputs):
        problems.append("expected 4 float32 outputs, got {}".format(
            [np.dtype(d["dtype"]).name for d in outputs]))
    if quantized:
        from training.convert_tflite import input_quantization_problem
        inp = interp.get_input_details()[0]
        if np.dtype(inp["dtype"]) != np.uint8:
            problems.append("input is {}, expected uint8".format(np.dtype(inp["dtype"]).name))
        else:
            problem = input_quantization_problem(inp, input_range, scale_rtol)
            if problem:
                problems.append(problem)
    return problems


def nms_settings(postprocess_cfg):
    """NmsSettings from the config's postprocess section (the app's live thresholds)."""
    return NmsSettings(int(postprocess_cfg.max_detections), float(postprocess_cfg.score_threshold),
                       float(postprocess_cfg.iou_threshold), int(postprocess_cfg.max_detections_per_class),
                       use_regular_nms=not postprocess_cfg.class_agnostic_nms)


def run_model(model_content_or_path, images_rgb, float_range=preprocess.INPUT_RANGE):
    """Detections of a postprocess .tflite on RGB images, read by the app's foreign path.

    Args:
      model_content_or_path: flatbuffer bytes or a .tflite path.
      images_rgb: RGB uint8 [h, w, 3] images (any size; stretched to the input).
      float_range: float input range (used only for a float-input model).

    Returns:
      list of app.model.postprocess.Detections (normalized ymin, xmin, ymax, xmax), one per image.
    """
    from ai_edge_litert.interpreter import Interpreter

    from app.model import postprocess
    if isinstance(model_content_or_path, bytes):
        interp = Interpreter(model_content=model_content_or_path)
    else:
        interp = Interpreter(model_path=str(model_content_or_path))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    height, width = int(inp["shape"][1]), int(inp["shape"][2])
    signature = postprocess.signature_outputs(interp)
    details = interp.get_output_details()
    dets = []
    for image in images_rgb:
        if np.dtype(inp["dtype"]) == np.uint8:
            x = preprocess.resize_to_input(image, height, width)[None]
        else:
            x = preprocess.image_to_float_input(image, height, width, float_range).astype(np.float32)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        arrays = [interp.get_tensor(d["index"]) for d in details]
        dets.append(postprocess.decode_postprocess_outputs(details, arrays, signature))
    return dets


def write_for_bundle(network, spec, num_classes, postprocess_cfg, calibration_rgb, folder, reference=None,
                     log=print):
    """Export's --with-postprocess step: model_int8_postprocess.tflite in `folder`, checked.

    Args:
      network: the tf_keras model the bundle's int8 model came from (QAT or float).
      spec: evaluate.ModelSpec (input size, float range, anchors, box coder scales).
      num_classes: number of labels.
      postprocess_cfg: the config's postprocess section (NMS settings of the op).
      calibration_rgb: RGB uint8 images, the same ones model_int8.tflite was calibrated on.
      folder: the staged bundle.
      reference: optional (images_rgb, Detections list of the bundle's int8 decode at live
        thresholds) to measure agreement against.

    Returns:
      the model.json "postprocess_model" entry: file, input_quantization, nms, and agreement
      with the bundle's own decode when `reference` is given.

    Raises:
      convert_tflite.ConversionCheckError: the converted model breaks a check.
    """
    import shutil

    from training import convert_tflite
    nms = nms_settings(postprocess_cfg)
    module = build_module(network, spec.anchors, int(num_classes), spec.input_height,
                          spec.input_width, nms, spec.box_coder_scales)
    saved = os.path.join(folder, ".postprocess_saved_model")
    try:
        save_savedmodel(module, saved)
        rep = convert_tflite.calibration_inputs(calibration_rgb, spec.input_height, spec.input_width,
                                                spec.float_range)
        content = convert(saved, rep)
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    problems = check_converted(content, spec.float_range)
    if problems:
        raise convert_tflite.ConversionCheckError(POSTPROCESS_FILE + ": " + "; ".join(problems))
    with open(os.path.join(folder, POSTPROCESS_FILE), "wb") as f:
        f.write(content)
    quant = convert_tflite.quantization_params(content)["input"]
    entry = {"file": POSTPROCESS_FILE, "input_quantization": [quant["scale"], quant["zero_point"]],
             "nms": dict(nms._asdict(), max_classes_per_detection=1)}
    if reference is not None:
        from app.check.agreement import pooled_agreement
        images, expected = reference
        entry["agreement_with_int8"] = pooled_agreement(expected, run_model(content, images))
        log("{} written: agreement with the bundle's int8 decode {:.3f} on {} images".format(
            POSTPROCESS_FILE, entry["agreement_with_int8"], len(images)))
    return entry

