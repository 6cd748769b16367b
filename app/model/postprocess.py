"""Model outputs -> `Detections`: raw SSD heads (edgedet bundles) and foreign post-processed models.

Two kinds of model reach the app:
  * edgedet bundle models emit raw heads, `box_encodings` [1, N, 4] and
    `class_logits` [1, N, C]; `decode_ssd` thresholds, scores, decodes and runs
    per-class NMS on them, all vectorized. Training's evaluation calls the same code.
  * foreign models (Coral zoo, OD API exports) end in `TFLite_Detection_PostProcess`
    and emit finished detections; `decode_postprocess_outputs` maps and
    dequantizes their four outputs.

Boxes are normalized [ymin, xmin, ymax, xmax] everywhere here; `to_pixel_boxes`
is the one place they become source-frame pixels [x0, y0, x1, y1].
"""

import collections
import functools

import numpy as np

from app.model import box_coder, nms

Detections = collections.namedtuple("Detections", "boxes scores class_ids")
Detections.__doc__ = """Detections of one image, sorted by score, highest first.

boxes: float32 [K, 4] normalized (ymin, xmin, ymax, xmax).
scores: float32 [K] in [0, 1].
class_ids: int32 [K], 0-based.
"""

SCORE_CONVERTERS = ("sigmoid", "softmax")


def empty_detections():
    """Detections with K = 0 and the documented dtypes."""
    return Detections(np.zeros((0, 4), np.float32), np.zeros((0,), np.float32),
                      np.zeros((0,), np.int32))


def dequantize(array, scale, zero_point):
    """Integer tensor values -> real values, (q - zero_point) * scale.

    Args:
      array: integer array (uint8/int8/int16/int32...) or float array.
      scale: quantization scale, > 0 for integer arrays.
      zero_point: quantization zero point.

    Returns:
      float32 array of the same shape; a float `array` is returned unchanged.
    """
    array = np.asarray(array)
    if array.dtype.kind == "f":
        return array
    if array.dtype.kind not in "iu":
        raise ValueError("expected an integer or float array, got dtype {}".format(array.dtype))
    if not scale > 0:
        raise ValueError("an integer array needs a quantization scale > 0, got {!r}".format(scale))
    return ((array.astype(np.float32) - np.float32(zero_point)) * np.float32(scale))


def to_pixel_boxes(boxes, frame_height, frame_width):
    """Normalized model boxes -> source-frame pixel boxes, clipped to the frame.

    The model input is the whole frame stretched, so normalized coordinates map
    linearly onto the frame.

    Args:
      boxes: float [K, 4] normalized (ymin, xmin, ymax, xmax).
      frame_height: source frame height in pixels.
      frame_width: source frame width in pixels.

    Returns:
      float32 [K, 4] pixels (x0, y0, x1, y1).
    """
    boxes = np.asarray(boxes, dtype=np.float32)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError("boxes must be [K, 4], got shape {}".format(boxes.shape))
    if frame_height <= 0 or frame_width <= 0:
        raise ValueError("frame size must be positive, got {}x{}".format(frame_width, frame_height))
    y = np.clip(boxes[:, 0::2], 0.0, 1.0) * np.float32(frame_height)
    x = np.clip(boxes[:, 1::2], 0.0, 1.0) * np.float32(frame_width)
    return np.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], axis=1).astype(np.float32)


# ----------------------------------------------------------------------------- raw SSD heads


def _drop_batch(array, rank, name):
    """[1, ...] -> [...]; checks the rank."""
    array = np.asarray(array)
    if array.ndim == rank + 1 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != rank:
        raise ValueError("{} must have rank {} (or {} with batch 1), got shape {}".format(
            name, rank, rank + 1, array.shape))
    return array


def _class_thresholds(num_classes, score_threshold, class_score_thresholds, background_class):
    """float64 [C] score threshold per logits column; inf never passes."""
    thresholds = np.full(num_classes, float(score_threshold))
    offset = 1 if background_class else 0
    for class_id, value in (class_score_thresholds or {}).items():
        if not 0 <= int(class_id) < num_classes - offset:
            raise ValueError("class_score_thresholds: class id must be in [0, {}), got {!r}".format(
                num_classes - offset, class_id))
        if not 0.0 <= float(value) <= 1.0:
            raise ValueError("class_score_thresholds[{}] must be in [0, 1], got {!r}".format(
                class_id, value))
        thresholds[int(class_id) + offset] = float(value)
    if background_class:
        thresholds[0] = np.inf
    return thresholds


def _logit_bounds(thresholds, score_converter):
    """Per-column bound b such that score >= t implies logit >= b (sigmoid) or
    logit - row max >= b (softmax). A loose bound is fine: survivors are checked exactly."""
    with np.errstate(divide="ignore"):
        if score_converter == "sigmoid":
            return np.log(thresholds) - np.log1p(-np.minimum(thresholds, 1.0))
        return np.log(thresholds)  # softmax p_c <= exp(l_c - max l)


@functools.lru_cache(maxsize=64)
def _column_rule(num_classes, score_threshold, class_thresholds, background_class, score_converter,
                 quantization, one_byte):
    """(thresholds, bounds) per logits column, worked out once per setting (the live decoder asks
    the same question every frame).

    Args:
      class_thresholds: ((class_id, threshold), ...), hashable.
      quantization: (scale, zero_point) of integer logits, or None for float logits.
      one_byte: the logits are (u)int8.

    Returns:
      read-only float64 [C] score thresholds, and the `_logit_bounds` in the logits' own
      domain: int64 for integer logits (int16 for sigmoid (u)int8 logits), float64 otherwise.
    """
    thresholds = _class_thresholds(num_classes, score_threshold, dict(class_thresholds), background_class)
    bounds = _logit_bounds(thresholds, score_converter)
    if quantization is not None:
        scale, zero_point = quantization
        # Floor keeps the integer bound loose by up to one step; the exact check follows.
        offset = 0.0 if score_converter == "softmax" else float(zero_point)
        with np.errstate(invalid="ignore"):
            bounds = np.floor(bounds / float(scale) + offset)
        bounds = np.clip(np.nan_to_num(bounds), -2 ** 31, 2 ** 31 - 1).astype(np.int64)
        if one_byte and score_converter == "sigmoid":
            # (u)int8 against bounds clipped just outside its range: same answer, a narrower compare.
            bounds = np.clip(bounds, -129, 256).astype(np.int16)
    thresholds.setflags(write=False)
    bounds.setflags(write=False)
    return thresholds, bounds


def _candidates(logits, bounds, score_converter):
    """(rows, cols) of logits that may pass the thresholds, compared in the logits' own domain
    (`bounds` from `_column_rule`)."""
    values = logits
    if score_converter == "softmax":
        if logits.dtype.kind in "iu":
            values = logits.astype(np.int64)
        values = values - values.max(axis=1, keepdims=True)
    rows, cols = np.nonzero(values >= bounds[None, :])
    return rows, cols


def _candidate_scores(logits, rows, cols, score_converter, quantization):
    """float32 scores of the candidate (row, col) pairs; dequantizes only what it needs."""
    if score_converter == "sigmoid":
        x = dequantize(logits[rows, cols], *quantization).astype(np.float32)
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    unique_rows, inverse = np.unique(rows, return_inverse=True)
    x = dequantize(logits[unique_rows], *quantization).astype(np.float32)
    x = np.exp(x - x.max(axis=1, keepdims=True))
    probs = x / x.sum(axis=1, keepdims=True)
    return probs[inverse, cols].astype(np.float32)


def _check_decode_args(score_converter, score_threshold, iou_threshold, max_detections,
                       max_per_class, box_quantization, logit_quantization, boxes, logits, anchors):
    if score_converter not in SCORE_CONVERTERS:
        raise ValueError("score_converter must be one of {}, got {!r}".format(
            SCORE_CONVERTERS, score_converter))
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError("score_threshold must be in [0, 1], got {!r}".format(score_threshold))
    if not 0.0 <= iou_threshold <= 1.0:
        raise ValueError("iou_threshold must be in [0, 1], got {!r}".format(iou_threshold))
    for name, value in (("max_detections", max_detections),
                        ("max_detections_per_class", max_per_class)):
        if int(value) != value or value < 0:
            raise ValueError("{} must be an integer >= 0, got {!r}".format(name, value))
    for name, array, quant in (("box_encodings", boxes, box_quantization),
                               ("class_logits", logits, logit_quantization)):
        if array.dtype.kind in "iu" and (quant is None or not quant[0] > 0):
            raise ValueError("{} is {}: pass its (scale > 0, zero_point), got {!r}".format(
                name, array.dtype, quant))
    if boxes.shape[1] != 4 or anchors.shape != (boxes.shape[0], 4) or len(logits) != len(boxes):
        raise ValueError("expected box_encodings [N, 4], class_logits [N, C], anchors [N, 4] with one N; "
                         "got {}, {}, {}".format(boxes.shape, logits.shape, anchors.shape))


def decode_ssd(box_encodings, class_logits, anchors, box_coder_scales=box_coder.DEFAULT_SCALES,
               score_converter="sigmoid", score_threshold=0.4, iou_threshold=0.6, max_detections=15,
               max_detections_per_class=10, class_score_thresholds=None, box_quantization=None,
               logit_quantization=None, background_class=False, class_agnostic_nms=False):
    """Raw SSD head outputs -> Detections (threshold, score, decode, NMS).

    Candidates are chosen in the logits' own domain before any float maths: for
    integer logits the score threshold becomes an integer bound, and only the
    survivors are dequantized, scored, and have their boxes decoded. An
    (anchor, class) pair is one candidate, so an anchor may yield several classes.
    NMS sees the decoded boxes unclipped; its survivors are then clipped to [0, 1], those
    left without area dropped, and the rest capped at max_detections. That is the OD API's
    order (multiclass_non_max_suppression clips after NMS): clipping first makes boxes that
    cross the image border overlap more, and suppressed 6 of the 1025 OD API detections on
    the real fixture (tests/test_import_checkpoint.py).

    Args:
      box_encodings: [N, 4] or [1, N, 4] (ty, tx, th, tw), float or integer.
      class_logits: [N, C] or [1, N, C] logits, float or integer.
      anchors: float [N, 4] (ycenter, xcenter, height, width), normalized.
      box_coder_scales: (y, x, height, width) faster_rcnn_box_coder scales.
      score_converter: "sigmoid" (per class) or "softmax" (over each anchor's row).
      score_threshold: minimum score in [0, 1] for classes not in `class_score_thresholds`.
      iou_threshold: NMS IoU threshold in [0, 1].
      max_detections: most detections returned.
      max_detections_per_class: most detections per class.
      class_score_thresholds: optional {class_id (0-based): threshold}.
      box_quantization: (scale, zero_point) if `box_encodings` is integer.
      logit_quantization: (scale, zero_point) if `class_logits` is integer.
      background_class: True if logits column 0 is a background class (softmax
        OD API models); it is never reported and class ids shift down by one.
      class_agnostic_nms: suppress overlapping boxes across classes too (see nms.per_class_nms).

    Returns:
      Detections; boxes normalized (ymin, xmin, ymax, xmax).
    """
    boxes = _drop_batch(box_encodings, 2, "box_encodings")
    logits = _drop_batch(class_logits, 2, "class_logits")
    anchors = np.asarray(anchors, dtype=np.float32)
    _check_decode_args(score_converter, score_threshold, iou_threshold, max_detections,
                       max_detections_per_class, box_quantization, logit_quantization, boxes,
                       logits, anchors)
    quantization = None
    if logits.dtype.kind in "iu":
        quantization = (float(logit_quantization[0]), float(logit_quantization[1]))
    thresholds, bounds = _column_rule(
        logits.shape[1], float(score_threshold),
        tuple(sorted((int(k), float(v)) for k, v in (class_score_thresholds or {}).items())),
        bool(background_class), score_converter, quantization, logits.dtype.itemsize == 1)
    rows, cols = _candidates(logits, bounds, score_converter)
    scores = _candidate_scores(logits, rows, cols, score_converter, logit_quantization or (1.0, 0))
    passed = scores >= thresholds[cols]
    rows, cols, scores = rows[passed], cols[passed], scores[passed]
    if not len(rows):
        return empty_detections()
    unique_rows, inverse = np.unique(rows, return_inverse=True)
    codes = dequantize(boxes[unique_rows], *(box_quantization or (1.0, 0)))
    decoded = box_coder.decode(codes, anchors[unique_rows], box_coder_scales)
    decoded = decoded[inverse]
    class_ids = (cols - (1 if background_class else 0)).astype(np.int32)
    keep = nms.per_class_nms(decoded, scores, class_ids, iou_threshold, max_detections_per_class,
                             len(scores), class_agnostic=class_agnostic_nms)
    keep, clipped = _clip_to_image(decoded, keep, max_detections)
    return Detections(clipped, scores[keep], class_ids[keep])


def _clip_to_image(boxes, keep, max_detections):
    """NMS survivors clipped to [0, 1], those left without area dropped, then capped (the OD API's order).

    Args:
      boxes: float32 [K, 4] decoded (ymin, xmin, ymax, xmax), unclipped.
      keep: int64 [M] indices into `boxes` by descending score.
      max_detections: most detections returned.

    Returns:
      (int64 [M'] indices, float32 [M', 4] clipped boxes), M' <= max_detections.
    """
    clipped = np.clip(boxes[keep], 0.0, 1.0)
    has_area = (clipped[:, 2] > clipped[:, 0]) & (clipped[:, 3] > clipped[:, 1])
    return keep[has_area][:int(max_detections)], clipped[has_area][:int(max_detections)]


# ----------------------------------------------------------------------------- foreign models
#
# A model ending in TFLite_Detection_PostProcess has four outputs: boxes [1, M, 4]
# (ymin, xmin, ymax, xmax), classes [1, M], scores [1, M] and count [1]. Their
# order depends on the exporter, so each is found by, in turn:
#   1. the signature's output names: a name containing "box", "class", "score" or
#      "num"/"count" (Model Garden, our converter runs); or the OD API TF2 exporter's
#      anonymous "output_0".."output_3", which are count, scores, classes, boxes;
#   2. the TF1 tensor names "TFLite_Detection_PostProcess" and ":1", ":2", ":3"
#      (boxes, classes, scores, count);
#   3. shapes: boxes is the rank-3 output, count the size-1 output. The two [1, M]
#      outputs cannot be told apart by shape, so their order decides, as in
#      pycoral: when count is the last output the model keeps the op's own (TF1)
#      order and the first [1, M] output is classes; otherwise it is the order TF2
#      converters produce for OD API exports (scores, boxes, count, classes) and
#      the first [1, M] output is scores.
# Each candidate mapping must fit the shapes before it is accepted.

POSTPROCESS_ROLES = ("boxes", "classes", "scores", "count")
_KEYWORDS = (("boxes", ("box",)), ("classes", ("class",)), ("scores", ("score",)),
             ("count", ("num", "count")))
_ODAPI_TF2_SIGNATURE = {"output_0": "count", "output_1": "scores", "output_2": "classes",
                        "output_3": "boxes"}
_TF1_NAME = "TFLite_Detection_PostProcess"


def _shape(detail):
    return tuple(int(v) for v in detail["shape"])


def _fits(mapping, details):
    """True if a role -> position mapping has the op's output shapes."""
    if mapping is None or sorted(mapping.values()) != list(range(len(details))):
        return False
    boxes, count = _shape(details[mapping["boxes"]]), _shape(details[mapping["count"]])
    if len(boxes) != 3 or boxes[2] != 4 or int(np.prod(count)) != 1:
        return False
    return all(_shape(details[mapping[r]]) == boxes[:2] for r in ("classes", "scores"))


def _by_signature(details, signature_outputs):
    if not signature_outputs:
        return None
    position = {int(d["index"]): i for i, d in enumerate(details)}
    index = {name: int(v["index"] if isinstance(v, dict) else v) for name, v in signature_outputs.items()}
    if set(index) == set(_ODAPI_TF2_SIGNATURE):
        roles = {_ODAPI_TF2_SIGNATURE[name]: i for name, i in index.items()}
    else:
        roles = {}
        for role, words in _KEYWORDS:
            names = [n for n in index if any(w in n.lower() for w in words)]
            if len(names) == 1:
                roles[role] = index[names[0]]
    if len(roles) != 4 or not all(i in position for i in roles.values()):
        return None
    return {role: position[i] for role, i in roles.items()}


def _by_tf1_names(details):
    suffixes = {"": "boxes", ":1": "classes", ":2": "scores", ":3": "count"}
    mapping = {}
    for i, d in enumerate(details):
        name = d.get("name", "")
        if name.startswith(_TF1_NAME) and name[len(_TF1_NAME):] in suffixes:
            mapping[suffixes[name[len(_TF1_NAME):]]] = i
    return mapping if len(mapping) == 4 else None


def _by_shape(details):
    shapes = [_shape(d) for d in details]
    boxes = [i for i, s in enumerate(shapes) if len(s) == 3 and s[2] == 4]
    count = [i for i, s in enumerate(shapes) if int(np.prod(s)) == 1 and len(s) <= 1]
    pair = [i for i in range(len(shapes)) if i not in boxes + count]
    if len(boxes) != 1 or len(count) != 1 or len(pair) != 2:
        return None
    first, second = pair
    if count[0] == len(shapes) - 1:  # the op's own (TF1) order
        return {"boxes": boxes[0], "count": count[0], "classes": first, "scores": second}
    return {"boxes": boxes[0], "count": count[0], "scores": first, "classes": second}


def map_postprocess_outputs(output_details, signature_outputs=None):
    """Finds the four TFLite_Detection_PostProcess outputs (rules in the comment above).

    Args:
      output_details: the interpreter's `get_output_details()` list; each dict
        needs "index", "name" and "shape".
      signature_outputs: optional {signature output name: tensor index} (or
        {name: detail dict}), e.g. from `signature_outputs(interpreter)`.

    Returns:
      {"boxes", "classes", "scores", "count": position in `output_details`}.

    Raises:
      ValueError: the outputs are not those of TFLite_Detection_PostProcess.
    """
    details = list(output_details)
    shapes = [_shape(d) for d in details]
    if len(details) == 4:
        for mapping in (_by_signature(details, signature_outputs), _by_tf1_names(details),
                        _by_shape(details)):
            if _fits(mapping, details):
                return mapping
    raise ValueError("expected the 4 outputs of TFLite_Detection_PostProcess (boxes [1, M, 4], "
                     "classes [1, M], scores [1, M], count [1]), got shapes {}".format(shapes))


def signature_outputs(interpreter):
    """{output name: tensor index} of the interpreter's only (or serving_default) signature, or None."""
    signatures = interpreter.get_signature_list() if hasattr(interpreter, "get_signature_list") else {}
    if not signatures:
        return None
    key = "serving_default" if "serving_default" in signatures else None
    if key is None and len(signatures) == 1:
        key = next(iter(signatures))
    if key is None:
        return None
    details = interpreter.get_signature_runner(key).get_output_details()
    return {name: int(detail["index"]) for name, detail in details.items()}


def _detail_quantization(detail):
    """(scale, zero_point) of an output; integer outputs without one hold plain integers."""
    scale, zero_point = detail.get("quantization", (0.0, 0)) or (0.0, 0)
    if not scale:
        params = detail.get("quantization_parameters") or {}
        scales, zeros = params.get("scales", ()), params.get("zero_points", ())
        if len(scales):
            scale, zero_point = float(scales[0]), int(zeros[0]) if len(zeros) else 0
    return (float(scale), int(zero_point)) if scale else (1.0, 0)


def decode_postprocess_outputs(output_details, outputs, signature_outputs=None, score_threshold=0.0,
                               class_score_thresholds=None, max_detections=None):
    """Outputs of a model ending in TFLite_Detection_PostProcess -> Detections.

    Every integer output is dequantized with its own scale and zero point, and
    class indices are ROUNDED: converters asked for uint8 outputs quantize class
    ids too (3 classes -> scale 2/255, class 1 stored as 127 -> 0.996), and
    truncating that gives the wrong class. `count` is rounded and clamped to [0, M].

    Args:
      output_details: the interpreter's `get_output_details()` list.
      outputs: arrays in the same order as `output_details`.
      signature_outputs: optional {signature output name: tensor index}.
      score_threshold: minimum score in [0, 1] for classes not in `class_score_thresholds`.
      class_score_thresholds: optional {class_id (0-based): threshold}.
      max_detections: optional cap on the number returned.

    Returns:
      Detections; boxes normalized (ymin, xmin, ymax, xmax), clipped to [0, 1].
    """
    details = list(output_details)
    if len(outputs) != len(details):
        raise ValueError("expected one array per output detail ({}), got {}".format(
            len(details), len(outputs)))
    if not 0.0 <= score_threshold <= 1.0:
        raise ValueError("score_threshold must be in [0, 1], got {!r}".format(score_threshold))
    if max_detections is not None and (int(max_detections) != max_detections or max_detections < 0):
        raise ValueError("max_detections must be None or an integer >= 0, got {!r}".format(max_detections))
    mapping = map_postprocess_outputs(details, signature_outputs)
    real = {role: dequantize(outputs[i], *_detail_quantization(details[i])).astype(np.float32)
            for role, i in mapping.items()}
    boxes = real["boxes"].reshape(-1, 4)
    count = int(np.clip(np.rint(real["count"].reshape(-1)[0]), 0, len(boxes)))
    boxes = np.clip(boxes[:count], 0.0, 1.0)
    class_ids = np.rint(real["classes"].reshape(-1)[:count]).astype(np.int32)
    scores = real["scores"].reshape(-1)[:count]
    thresholds = np.full(count, float(score_threshold), np.float32)
    for class_id, value in (class_score_thresholds or {}).items():
        thresholds[class_ids == int(class_id)] = float(value)
    keep = np.nonzero(scores >= thresholds)[0]
    keep = keep[np.argsort(-scores[keep], kind="mergesort")][:max_detections]
    return Detections(boxes[keep], scores[keep], class_ids[keep])
