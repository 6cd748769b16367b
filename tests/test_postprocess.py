"""app.model.postprocess.decode_ssd / dequantize / to_pixel_boxes on crafted heads with hand-computed results."""

import math

import numpy as np
import pytest

from app.model import anchors as anchors_mod
from app.model import box_coder
from app.model.postprocess import Detections, decode_ssd, dequantize, to_pixel_boxes

ANCHORS = np.array([[0.25, 0.25, 0.5, 0.5], [0.25, 0.75, 0.5, 0.5],
                    [0.75, 0.25, 0.5, 0.5], [0.75, 0.75, 0.5, 0.5]], np.float32)
# Anchor 0 -> box of the anchor itself; anchor 1: ty 2, tx -2, th 5 ln 0.5 -> centre
# (0.35, 0.65), size (0.25, 0.5) -> [0.225, 0.4, 0.475, 0.9]; anchor 3 overflows the image.
ENCODINGS = np.array([[0, 0, 0, 0], [2, -2, 5 * math.log(0.5), 0],
                      [0, 0, 0, 0], [0, 0, 5 * math.log(2.0), 0]], np.float32)
# sigmoid: 2 -> 0.8808, 0 -> 0.5, -1 -> 0.2689, 1 -> 0.7311, -5 -> 0.0067
LOGITS = np.array([[-5, 2], [0, -5], [-1, -5], [-5, 1]], np.float32)


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_decode_ssd_hand_computed():
    det = decode_ssd(ENCODINGS[None], LOGITS[None], ANCHORS, score_threshold=0.4)
    assert isinstance(det, Detections)
    assert det.class_ids.tolist() == [1, 1, 0]
    assert det.class_ids.dtype == np.int32 and det.scores.dtype == np.float32
    np.testing.assert_allclose(det.scores, [sigmoid(2), sigmoid(1), 0.5], atol=1e-6)
    # Anchor 3 decodes to height 1.0 centred at 0.75 -> [0.25, 0.5, 1.25, 1.0], clipped to 1.
    np.testing.assert_allclose(det.boxes, [[0, 0, 0.5, 0.5], [0.25, 0.5, 1.0, 1.0],
                                           [0.225, 0.4, 0.475, 0.9]], atol=1e-6)


def test_decode_ssd_thresholds_and_limits():
    det = decode_ssd(ENCODINGS, LOGITS, ANCHORS, score_threshold=0.25)
    assert det.class_ids.tolist() == [1, 1, 0, 0]
    det = decode_ssd(ENCODINGS, LOGITS, ANCHORS, score_threshold=0.4,
                     class_score_thresholds={0: 0.6})
    assert det.class_ids.tolist() == [1, 1]
    det = decode_ssd(ENCODINGS, LOGITS, ANCHORS, score_threshold=0.4,
                     class_score_thresholds={1: 0.9})
    np.testing.assert_allclose(det.scores, [0.5], atol=1e-6)
    det = decode_ssd(ENCODINGS, LOGITS, ANCHORS, score_threshold=0.25, max_detections=3,
                     max_detections_per_class=1)
    assert det.class_ids.tolist() == [1, 0]
    det = decode_ssd(ENCODINGS, LOGITS, ANCHORS, score_threshold=0.95)
    assert det.boxes.shape == (0, 4) and det.scores.shape == (0,) and det.class_ids.shape == (0,)


def test_decode_ssd_threshold_is_inclusive_and_nms_applies():
    # Two anchors with the same box and class: NMS keeps the higher score only.
    encodings = np.zeros((2, 4), np.float32)
    same = np.array([[0.5, 0.5, 0.4, 0.4]] * 2, np.float32)
    logits = np.array([[0.0], [1.0]], np.float32)
    det = decode_ssd(encodings, logits, same, score_threshold=0.5)
    np.testing.assert_allclose(det.scores, [sigmoid(1)], atol=1e-6)
    det = decode_ssd(encodings, logits, same, score_threshold=0.5, iou_threshold=1.0)
    np.testing.assert_allclose(det.scores, [sigmoid(1), 0.5], atol=1e-6)


def test_decode_ssd_runs_nms_before_clipping_like_the_odapi():
    # x ranges -0.3..0.2 and -0.05..0.2: IoU 0.5 unclipped, so NMS at 0.6 keeps both; clipped
    # first (0..0.2 twice) they would be one. The third box lies beyond the right edge: no area.
    anchors = np.array([[0.5, -0.05, 0.4, 0.5], [0.5, 0.075, 0.4, 0.25], [0.5, 1.2, 0.4, 0.2]],
                       np.float32)
    logits = np.array([[2.0], [1.0], [3.0]], np.float32)
    det = decode_ssd(np.zeros((3, 4), np.float32), logits, anchors, score_threshold=0.5,
                     iou_threshold=0.6, max_detections=2)
    np.testing.assert_allclose(det.scores, [sigmoid(2.0), sigmoid(1.0)], atol=1e-6)
    np.testing.assert_allclose(det.boxes, [[0.3, 0.0, 0.7, 0.2]] * 2, atol=1e-6)


def test_decode_ssd_class_agnostic_nms_keeps_one_label_per_object():
    # One anchor scores two classes (0.73 and 0.62): per-class NMS reports both, agnostic one.
    encodings = np.zeros((2, 4), np.float32)
    anchors = np.array([[0.5, 0.5, 0.4, 0.4], [0.1, 0.1, 0.1, 0.1]], np.float32)
    logits = np.array([[1.0, 0.5], [-5.0, 0.0]], np.float32)
    det = decode_ssd(encodings, logits, anchors, score_threshold=0.45)
    assert det.class_ids.tolist() == [0, 1, 1]
    det = decode_ssd(encodings, logits, anchors, score_threshold=0.45, class_agnostic_nms=True)
    assert det.class_ids.tolist() == [0, 1]
    np.testing.assert_allclose(det.scores, [sigmoid(1.0), 0.5], atol=1e-6)
    np.testing.assert_allclose(det.boxes[1], [0.05, 0.05, 0.15, 0.15], atol=1e-6)


def test_softmax_hand_computed_with_background():
    # Row probs: [0.6, 0.3, 0.1] and [0.25, 0.25, 0.5].
    logits = np.log(np.array([[6, 3, 1], [1, 1, 2]], np.float32))
    enc = np.zeros((2, 4), np.float32)
    det = decode_ssd(enc, logits, ANCHORS[:2], score_converter="softmax", score_threshold=0.28)
    assert det.class_ids.tolist() == [0, 2, 1]
    np.testing.assert_allclose(det.scores, [0.6, 0.5, 0.3], atol=1e-6)
    det = decode_ssd(enc, logits, ANCHORS[:2], score_converter="softmax", score_threshold=0.28,
                     background_class=True)
    assert det.class_ids.tolist() == [1, 0]
    np.testing.assert_allclose(det.scores, [0.5, 0.3], atol=1e-6)


def _quantize(x, scale, zero_point, dtype=np.uint8):
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def _random_heads(seed, n=600, c=3):
    rng = np.random.RandomState(seed)
    anchors = anchors_mod.ssd_anchors(192, 224)[:n]
    logits = rng.uniform(-7.0, 3.0, size=(n, c)).astype(np.float32)
    encodings = rng.uniform(-2.0, 2.0, size=(n, 4)).astype(np.float32)
    return anchors, encodings, logits


@pytest.mark.parametrize("converter,dtype", [("sigmoid", np.uint8), ("softmax", np.uint8),
                                             ("sigmoid", np.int8)])
def test_integer_heads_equal_their_dequantized_float_twin(converter, dtype):
    anchors, encodings, logits = _random_heads(1)
    lq = (10.0 / 255, 178 if dtype == np.uint8 else 50)
    bq = (4.0 / 255, 128 if dtype == np.uint8 else 0)
    q_logits, q_enc = _quantize(logits, *lq, dtype=dtype), _quantize(encodings, *bq, dtype=dtype)
    kw = dict(score_converter=converter, score_threshold=0.3, iou_threshold=0.5,
              max_detections=50, max_detections_per_class=30, class_score_thresholds={2: 0.5})
    got = decode_ssd(q_enc[None], q_logits[None], anchors, box_quantization=bq,
                     logit_quantization=lq, **kw)
    ref = decode_ssd(dequantize(q_enc, *bq), dequantize(q_logits, *lq), anchors, **kw)
    assert len(got.scores) > 5
    np.testing.assert_array_equal(got.class_ids, ref.class_ids)
    np.testing.assert_array_equal(got.scores, ref.scores)
    np.testing.assert_array_equal(got.boxes, ref.boxes)
    assert got.scores.min() >= 0.3 and got.scores[got.class_ids == 2].min() >= 0.5


def test_uint8_heads_match_float_heads_within_a_quantization_step():
    anchors, encodings, logits = _random_heads(2)
    # Keep every float score at least 0.02 away from the threshold, so one quantization
    # step (score error <= scale / 8 = 0.005) cannot move a candidate across it.
    near = np.abs(1 / (1 + np.exp(-logits)) - 0.4) < 0.02
    logits[near] -= 1.0
    lq, bq = (10.0 / 255, 178), (4.0 / 255, 128)
    kw = dict(score_threshold=0.4, iou_threshold=1.0, max_detections=1000,
              max_detections_per_class=1000)
    got = decode_ssd(_quantize(encodings, *bq), _quantize(logits, *lq), anchors,
                     box_quantization=bq, logit_quantization=lq, **kw)
    ref = decode_ssd(encodings, logits, anchors, **kw)
    assert len(ref.scores) > 20 and len(got.scores) == len(ref.scores)

    # Match each float detection to the uint8 one of the same class with the nearest box
    # (orders can differ where scores tie after quantization).
    dist = np.abs(ref.boxes[:, None, :] - got.boxes[None, :, :]).max(axis=2)
    dist[ref.class_ids[:, None] != got.class_ids[None, :]] = np.inf
    match = dist.argmin(axis=1)
    assert sorted(match.tolist()) == list(range(len(match)))
    # Code error <= scale/2 -> centre error <= 0.5 * 4/255 / 10 * anchor size, size error
    # <= exp(4/255/2/5) - 1 ~ 0.3 %; anchors here are at most ~0.9 across.
    assert dist[np.arange(len(match)), match].max() < 0.01
    # Logit error <= scale/2 and sigmoid' <= 1/4 -> score error <= scale/8.
    np.testing.assert_allclose(got.scores[match], ref.scores, atol=lq[0] / 8 + 1e-6)


def test_integer_heads_need_their_quantization():
    with pytest.raises(ValueError, match="class_logits is uint8"):
        decode_ssd(ENCODINGS, LOGITS.astype(np.uint8), ANCHORS)
    with pytest.raises(ValueError, match="box_encodings is int8"):
        decode_ssd(ENCODINGS.astype(np.int8), LOGITS, ANCHORS, box_quantization=(0.0, 0))


@pytest.mark.parametrize("kwargs,match", [
    (dict(score_converter="relu"), "score_converter"),
    (dict(score_threshold=1.5), "score_threshold"),
    (dict(iou_threshold=-0.1), "iou_threshold"),
    (dict(max_detections=-1), "max_detections"),
    (dict(class_score_thresholds={5: 0.5}), "class id"),
    (dict(class_score_thresholds={0: 2.0}), r"class_score_thresholds\[0\]"),
    (dict(anchors=ANCHORS[:3]), "one N"),
])
def test_decode_ssd_rejects_bad_arguments(kwargs, match):
    args = dict(box_encodings=ENCODINGS, class_logits=LOGITS, anchors=ANCHORS)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        decode_ssd(**args)


def test_dequantize():
    q = np.array([0, 127, 128, 255], np.uint8)
    np.testing.assert_allclose(dequantize(q, 2.0 / 255, 128), [-256 / 255, -2 / 255, 0, 254 / 255])
    f = np.array([0.5, 1.5], np.float32)
    assert dequantize(f, 0.0, 0) is f
    with pytest.raises(ValueError, match="scale > 0"):
        dequantize(q, 0.0, 0)


def test_to_pixel_boxes():
    boxes = np.array([[0.1, 0.2, 0.5, 1.0], [-0.1, 0.5, 1.2, 0.75]], np.float32)
    got = to_pixel_boxes(boxes, 480, 640)
    np.testing.assert_allclose(got, [[128, 48, 640, 240], [320, 0, 480, 480]], atol=1e-4)
    assert to_pixel_boxes(np.zeros((0, 4)), 10, 10).shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[K, 4\]"):
        to_pixel_boxes(np.zeros(4), 10, 10)


def test_decode_inverts_the_box_coder_end_to_end():
    anchors = anchors_mod.ssd_anchors(96, 128)
    truth = np.array([[0.1, 0.2, 0.4, 0.5], [0.5, 0.55, 0.9, 0.95]], np.float32)
    idx = [10, len(anchors) - 3]
    enc = np.zeros((len(anchors), 4), np.float32)
    enc[idx] = box_coder.encode(truth, anchors[idx])
    logits = np.full((len(anchors), 3), -8.0, np.float32)
    logits[idx[0], 2] = 3.0
    logits[idx[1], 0] = 1.0
    det = decode_ssd(enc, logits, anchors)
    assert det.class_ids.tolist() == [2, 0]
    np.testing.assert_allclose(det.boxes, truth, atol=1e-5)


# ----------------------------------------------------------------------------- foreign outputs

from app.model.postprocess import decode_postprocess_outputs, map_postprocess_outputs  # noqa: E402

M = 4
# Four detections, ground truth: classes 0, 1, 2, 1 with scores 0.9, 0.8, 0.6, 0.3 (count 3 valid + 1 pad).
BOXES = np.array([[[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.9, 1.05], [0.2, 0.6, 0.3, 0.7], [0, 0, 0, 0]]],
                 np.float32)
CLASS_Q = (2.0 / 255, 0)  # what the converter picks for 3 classes with uint8 outputs
BOX_Q = (1.05 / 255, 0)
SCORE_Q = (1.0 / 256, 0)
COUNT_Q = (4.0 / 255, 0)


def detail(name, index, shape, quant=(0.0, 0), dtype=np.uint8):
    return {"name": name, "index": index, "shape": np.array(shape, np.int32), "dtype": dtype,
            "quantization": quant}


def uint8_arrays():
    return {"boxes": np.round(BOXES / BOX_Q[0]).astype(np.uint8),
            # class 1 -> 127 (0.996) and class 2 -> 255, as the real converter stores them
            "classes": np.array([[0, 127, 255, 127]], np.uint8),
            "scores": np.round(np.array([[0.9, 0.8, 0.6, 0.3]]) / SCORE_Q[0]).astype(np.uint8),
            "count": np.array([191], np.uint8)}  # 191 * 4/255 = 2.996 -> 3


def tf1_order():
    details = [detail("TFLite_Detection_PostProcess", 10, [1, M, 4], BOX_Q),
               detail("TFLite_Detection_PostProcess:1", 11, [1, M], CLASS_Q),
               detail("TFLite_Detection_PostProcess:2", 12, [1, M], SCORE_Q),
               detail("TFLite_Detection_PostProcess:3", 13, [1], COUNT_Q)]
    a = uint8_arrays()
    return details, [a["boxes"], a["classes"], a["scores"], a["count"]]


def tf2_order():
    # The order TF2 converters give OD API exports: scores, boxes, count, classes.
    details = [detail("StatefulPartitionedCall:1", 20, [1, M], SCORE_Q),
               detail("StatefulPartitionedCall:3", 21, [1, M, 4], BOX_Q),
               detail("StatefulPartitionedCall:0", 22, [1], COUNT_Q),
               detail("StatefulPartitionedCall:2", 23, [1, M], CLASS_Q)]
    a = uint8_arrays()
    return details, [a["scores"], a["boxes"], a["count"], a["classes"]]


def check_expected(det):
    assert det.class_ids.tolist() == [0, 1, 2]
    np.testing.assert_allclose(det.scores, [0.9, 0.8, 0.6], atol=SCORE_Q[0] / 2 + 1e-6)
    np.testing.assert_allclose(det.boxes, np.clip(BOXES[0, :3], 0, 1), atol=BOX_Q[0] / 2 + 1e-6)


def test_tf1_order_by_names_with_uint8_class_rounding():
    details, arrays = tf1_order()
    assert map_postprocess_outputs(details) == {"boxes": 0, "classes": 1, "scores": 2, "count": 3}
    check_expected(decode_postprocess_outputs(details, arrays))
    # Truncating 0.996 would have given class 0 for the second detection.
    assert int(dequantize(arrays[1], *CLASS_Q)[0, 1]) == 0


def test_tf2_order_by_shape():
    details, arrays = tf2_order()
    assert map_postprocess_outputs(details) == {"scores": 0, "boxes": 1, "count": 2, "classes": 3}
    check_expected(decode_postprocess_outputs(details, arrays))


def test_tf1_order_by_shape_when_names_are_anonymous():
    details, arrays = tf1_order()
    for i, d in enumerate(details):
        d["name"] = "Identity_{}".format(i)
    assert map_postprocess_outputs(details) == {"boxes": 0, "classes": 1, "scores": 2, "count": 3}
    check_expected(decode_postprocess_outputs(details, arrays))


def test_signature_names_win_over_order():
    # Same tensors in the TF2 order, but a signature says which is which by name.
    details, arrays = tf2_order()
    signature = {"detection_scores": 20, "detection_boxes": 21, "num_detections": 22,
                 "detection_classes": 23}
    assert map_postprocess_outputs(details, signature) == {
        "scores": 0, "boxes": 1, "count": 2, "classes": 3}
    # An order the shape rule would get wrong (count first): only the signature can fix it.
    details = [details[2], details[1], details[3], details[0]]
    arrays = [arrays[2], arrays[1], arrays[3], arrays[0]]
    assert map_postprocess_outputs(details)["classes"] == 3  # the positional guess is wrong here
    check_expected(decode_postprocess_outputs(details, arrays, signature))
    # The OD API TF2 exporter's anonymous signature names.
    odapi = {"output_0": 22, "output_1": 20, "output_2": 23, "output_3": 21}
    check_expected(decode_postprocess_outputs(details, arrays, odapi))


def test_signature_that_does_not_fit_shapes_falls_back():
    details, arrays = tf1_order()
    wrong = {"detection_scores": 10, "detection_boxes": 11, "num_detections": 12, "detection_classes": 13}
    assert map_postprocess_outputs(details, wrong) == {"boxes": 0, "classes": 1, "scores": 2, "count": 3}


def test_float_outputs_and_count_clamp():
    details = [detail("a", 0, [1, M, 4], dtype=np.float32), detail("b", 1, [1, M], dtype=np.float32),
               detail("c", 2, [1, M], dtype=np.float32), detail("d", 3, [1], dtype=np.float32)]
    classes = np.array([[0.0, 1.0, 2.0, 1.0]], np.float32)
    scores = np.array([[0.9, 0.8, 0.6, 0.3]], np.float32)
    for count, expected in ((7.0, 4), (-2.0, 0), (2.0, 2)):
        det = decode_postprocess_outputs(details, [BOXES, classes, scores, np.array([count], np.float32)])
        assert len(det.scores) == expected
    det = decode_postprocess_outputs(details, [BOXES, classes, scores, np.array([4.0], np.float32)],
                                     score_threshold=0.5, class_score_thresholds={1: 0.85})
    assert det.class_ids.tolist() == [0, 2]
    det = decode_postprocess_outputs(details, [BOXES, classes, scores, np.array([4.0], np.float32)],
                                     max_detections=2)
    assert det.class_ids.tolist() == [0, 1] and det.class_ids.dtype == np.int32


def test_foreign_outputs_that_are_not_postprocess_raise():
    details, arrays = tf1_order()
    with pytest.raises(ValueError, match=r"expected the 4 outputs of TFLite_Detection_PostProcess"):
        map_postprocess_outputs(details[:3])
    details[3]["shape"] = np.array([1, M], np.int32)
    with pytest.raises(ValueError, match=r"got shapes \[\(1, 4, 4\), \(1, 4\), \(1, 4\), \(1, 4\)\]"):
        map_postprocess_outputs(details)
