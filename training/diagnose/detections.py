"""Findings about detections: box drift, agreement with the float twin, quantized class ids.

For raw SSD heads the two models are compared anchor by anchor (the same anchor is
the same prediction slot in both), which needs no score threshold and works even
for a model with few confident detections. Decoded detections use the app's own
decode + NMS (app.model.postprocess) and agreement (app.check.agreement).
"""

import collections

import numpy as np

from app.check import agreement as app_agreement
from app.model import box_coder
from app.config import PostprocessConfig, ReferenceConfig
from app.model.postprocess import decode_postprocess_outputs, decode_ssd, map_postprocess_outputs
from training.diagnose.findings import finding
from training.diagnose.runner import dequantized

TOP_ANCHORS = 20  # per image: the float model's most confident anchors
SIZE_WARN, SIZE_ERROR = 1.25, 1.5  # linear size ratio (or its inverse)
SHIFT_WARN, SHIFT_ERROR = 0.1, 0.25  # centre shift, in float box sizes
AGREEMENT_WARN = 0.9

Decoded = collections.namedtuple("Decoded", "float_dets quant_dets float_boxes quant_boxes float_top quant_top")
Decoded.__doc__ = """Per-image detections and anchor-matched boxes of both models.

float_dets, quant_dets: lists of Detections. float_boxes, quant_boxes: float32 [M, 4] normalized
(ymin, xmin, ymax, xmax), row i of both is the same anchor / matched detection.
float_top, quant_top: float32 [M] scores of both models on the same M anchors / matched
detections as the boxes (for score_collapse).
"""


def postprocess_settings(spec):
    """decode_ssd thresholds: the bundle's postprocess section, else the app's defaults."""
    defaults = PostprocessConfig()
    settings = {k: getattr(defaults, k) for k in ("score_threshold", "iou_threshold", "max_detections",
                                                   "max_detections_per_class", "class_agnostic_nms")}
    settings.update(getattr(spec, "postprocess", None) or {})
    return settings


def _sigmoid_scores(logits, converter):
    if converter == "softmax":
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))


def decode_raw(spec, names, float_outputs, quant_outputs):
    """Decodes a raw_ssd pair on every image (see Decoded).

    Args:
      spec: ModelSpec-like (anchors, box_coder_scales, score_converter, optional postprocess).
      names: {"box_encodings"|"class_logits": (float name, quant name)}.
      float_outputs, quant_outputs: {name: [Output per image]}.
    """
    settings = postprocess_settings(spec)
    result = Decoded([], [], [], [], [], [])
    for i in range(len(float_outputs[names["box_encodings"][0]])):
        per_model = []
        for side, outputs in ((0, float_outputs), (1, quant_outputs)):
            codes = dequantized(outputs[names["box_encodings"][side]][i]).reshape(-1, 4)
            logits = dequantized(outputs[names["class_logits"][side]][i])
            logits = logits.reshape(len(codes), -1)
            dets = decode_ssd(codes, logits, spec.anchors, spec.box_coder_scales, spec.score_converter,
                              **settings)
            per_model.append((codes, _sigmoid_scores(logits, spec.score_converter).max(axis=1), dets))
        (f_codes, f_scores, f_dets), (q_codes, q_scores, q_dets) = per_model
        top = np.argsort(-f_scores, kind="stable")[:TOP_ANCHORS]
        result.float_dets.append(f_dets)
        result.quant_dets.append(q_dets)
        result.float_boxes.append(box_coder.decode(f_codes[top], spec.anchors[top], spec.box_coder_scales))
        result.quant_boxes.append(box_coder.decode(q_codes[top], spec.anchors[top], spec.box_coder_scales))
        result.float_top.append(f_scores[top])
        result.quant_top.append(q_scores[top])
    return _stacked(result)


def _stacked(d):
    return d._replace(float_boxes=np.concatenate(d.float_boxes), quant_boxes=np.concatenate(d.quant_boxes),
                      float_top=np.concatenate(d.float_top), quant_top=np.concatenate(d.quant_top))


def _raw_outputs(runner, outputs, i):
    details = runner.interp.get_output_details()
    by_tensor = {o[i].tensor: o[i].values for o in outputs.values()}
    return details, [by_tensor[d["name"]] for d in details]


def decode_postprocess(pair, float_outputs, quant_outputs):
    """Decodes a pair ending in TFLite_Detection_PostProcess; boxes matched greedily by IoU."""
    result = Decoded([], [], [], [], [], [])
    for i in range(len(next(iter(quant_outputs.values())))):
        dets = []
        for runner, outputs in ((pair.float_model, float_outputs), (pair.quant_model, quant_outputs)):
            details, arrays = _raw_outputs(runner, outputs, i)
            dets.append(decode_postprocess_outputs(details, arrays, score_threshold=0.0))
        f, q = dets
        result.float_dets.append(_live(f))
        result.quant_dets.append(_live(q))
        rows, cols = _greedy_pairs(f.boxes[:TOP_ANCHORS], q.boxes[:TOP_ANCHORS])
        result.float_boxes.append(f.boxes[rows])
        result.quant_boxes.append(q.boxes[cols])
        result.float_top.append(f.scores[rows])
        result.quant_top.append(q.scores[cols])
    return _stacked(result)


def _live(dets, threshold=PostprocessConfig().score_threshold):
    keep = np.nonzero(dets.scores >= threshold)[0]
    return type(dets)(dets.boxes[keep], dets.scores[keep], dets.class_ids[keep])


def _greedy_pairs(boxes_a, boxes_b, min_iou=0.1):
    iou = app_agreement.box_iou(boxes_a, boxes_b)
    rows, cols = [], []
    while iou.size and iou.max() >= min_iou:
        r, c = np.unravel_index(int(np.argmax(iou)), iou.shape)
        rows.append(r)
        cols.append(c)
        iou[r, :], iou[:, c] = -1.0, -1.0
    return np.array(rows, int), np.array(cols, int)


def box_drift(float_boxes, quant_boxes):
    """box_drift: matched quantized boxes systematically larger/smaller or shifted.

    Args:
      float_boxes, quant_boxes: float [M, 4] normalized (ymin, xmin, ymax, xmax), row-matched.

    Returns:
      list with at most one finding.
    """
    if len(float_boxes) == 0:
        return []
    fh = np.maximum(float_boxes[:, 2] - float_boxes[:, 0], 1e-6)
    fw = np.maximum(float_boxes[:, 3] - float_boxes[:, 1], 1e-6)
    qh = np.maximum(quant_boxes[:, 2] - quant_boxes[:, 0], 1e-6)
    qw = np.maximum(quant_boxes[:, 3] - quant_boxes[:, 1], 1e-6)
    size = float(np.exp(np.median(0.5 * np.log(qh * qw / (fh * fw)))))
    dy = ((quant_boxes[:, 0] + quant_boxes[:, 2]) - (float_boxes[:, 0] + float_boxes[:, 2])) / (2 * fh)
    dx = ((quant_boxes[:, 1] + quant_boxes[:, 3]) - (float_boxes[:, 1] + float_boxes[:, 3])) / (2 * fw)
    shift = float(np.median(np.hypot(dy, dx)))
    grow = max(size, 1.0 / size)
    if grow < SIZE_WARN and shift < SHIFT_WARN:
        return []
    severity = "error" if grow >= SIZE_ERROR or shift >= SHIFT_ERROR else "warning"
    title = "quantized boxes are {:.2f}x the float boxes' size and shifted by {:.0%} of a box".format(size, shift)
    detail = ("Over {} matched boxes (the float model's most confident anchors, same anchor in both), the "
              "median linear size ratio quantized/float is {:.2f} and the median centre shift is {:.2f} box "
              "sizes (mean dy {:+.2f}, dx {:+.2f}).".format(len(float_boxes), size, shift,
                                                           float(np.mean(dy)), float(np.mean(dx))))
    return [finding("box_drift", severity, title, detail,
                    "box_encodings lost precision: fix the calibration range first; if it is right, keep "
                    "box_encodings float or train quantization-aware (edgedet-train train)",
                    {"matched": int(len(float_boxes)), "size_ratio": size, "center_shift": shift})]


def _map_vs_float(decoded, num_classes):
    """COCO mAP of the quantized detections with the float detections as ground truth, or None."""
    from training.evaluate import coco_metrics
    Truth = collections.namedtuple("Truth", "height width boxes classes")
    truth = [Truth(1000, 1000, d.boxes, d.class_ids) for d in decoded.float_dets]
    if not any(len(d.scores) for d in decoded.float_dets):
        return None
    return coco_metrics(truth, decoded.quant_dets, num_classes)


def detection_disagreement(decoded, num_classes):
    """detection_disagreement: pooled agreement of live detections and mAP of quant against float.

    Always returns one finding: an error below the app's reference.min_agreement, a
    warning below AGREEMENT_WARN, else info with the numbers.
    """
    agree = app_agreement.pooled_agreement(decoded.float_dets, decoded.quant_dets)
    metrics = _map_vs_float(decoded, num_classes)
    n_f = sum(len(d.scores) for d in decoded.float_dets)
    n_q = sum(len(d.scores) for d in decoded.quant_dets)
    detail = ("Detection agreement (same class, IoU >= 0.5) {:.2f} over {} images: float found {}, "
              "quantized {}.".format(agree, len(decoded.float_dets), n_f, n_q))
    if metrics is not None:
        detail += " mAP of the quantized detections with the float ones as ground truth: {:.3f} " \
                  "(mAP@0.5 {:.3f}).".format(metrics["map"], metrics["map50"])
    else:
        detail += " The float model found nothing on these images, so mAP is undefined; use images " \
                  "with objects the model knows."
    minimum = ReferenceConfig().min_agreement
    severity = "error" if agree < minimum else "warning" if agree < AGREEMENT_WARN else "info"
    title = "quantized detections agree {:.0%} with the float model".format(agree)
    return [finding("detection_disagreement", severity, title, detail,
                    "the earlier findings name the cause; with none, calibrate on more images or train "
                    "quantization-aware" if severity != "info" else "nothing to fix",
                    {"agreement": agree, "map": metrics["map"] if metrics else None,
                     "map50": metrics["map50"] if metrics else None, "float_detections": n_f,
                     "quant_detections": n_q})]


def class_index_quantized(quant_model):
    """class_index_quantized (warning): a post-processing model whose classes output is integer."""
    details = quant_model.interp.get_output_details()
    try:
        mapping = map_postprocess_outputs(details)
    except ValueError:
        return []
    d = details[mapping["classes"]]
    if np.dtype(d["dtype"]).kind not in "iu":
        return []
    scale, zero = d["quantization"]
    return [finding(
        "class_index_quantized", "warning", "the class-index output '{}' is quantized ({})".format(
            d["name"], np.dtype(d["dtype"]).name),
        "Class ids pass through scale {:.6g}, zero point {}: class k comes out as k*scale rounded to a code, "
        "e.g. 0.996 for class 1, and int() truncation turns it into class k-1.".format(scale, zero),
        "convert with float outputs (leave inference_output_type at tf.float32 for post-processing "
        "models), or round after dequantizing: np.rint((q - zero_point) * scale).astype(int)",
        {"output": d["name"], "scale": float(scale), "zero_point": int(zero)})]
