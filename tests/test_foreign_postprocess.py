"""Real conversion: a tiny model ending in TFLite_Detection_PostProcess, converted twice
(uint8 outputs and float outputs) with TensorFlow's converter and run in ai_edge_litert.

Shows that app.model.postprocess maps the outputs by the model's own signature and that
rounding class ids gives the same classes for both conversions, although the uint8
one stores class 1 as 127 * 2/255 = 0.996.
"""

import numpy as np
import pytest

from app.model.postprocess import decode_postprocess_outputs, dequantize, signature_outputs

tf = pytest.importorskip("tensorflow")
litert = pytest.importorskip("ai_edge_litert.interpreter")

N, C = 6, 3  # anchors, classes
# Six 0.2 x 0.2 anchors (ycenter, xcenter, h, w) on a 2 x 3 grid, far enough apart that NMS keeps all.
ANCHORS = np.array([[0.25 + 0.5 * (i // 3), 0.2 + 0.3 * (i % 3), 0.2, 0.2] for i in range(N)], np.float32)


def _implements_signature():
    attrs = [("max_detections", "i", N), ("max_classes_per_detection", "i", 1),
             ("detections_per_class", "i", N), ("use_regular_nms", "b", "false"),
             ("nms_score_threshold", "f", 0.3), ("nms_iou_threshold", "f", 0.5),
             ("y_scale", "f", 10.0), ("x_scale", "f", 10.0), ("h_scale", "f", 5.0),
             ("w_scale", "f", 5.0), ("num_classes", "i", C)]
    parts = ['name: "TFLite_Detection_PostProcess"']
    parts += ['attr {{ key: "{}" value {{ {}: {} }} }}'.format(k, t, v) for k, t, v in attrs]
    return " ".join(parts)


def _build_module():
    # The converter replaces a function carrying this `experimental_implements` annotation with
    # the TFLite_Detection_PostProcess custom op; its TF body is a placeholder that never runs.
    @tf.function(experimental_implements=_implements_signature())
    def postprocess(box_encodings, class_scores, anchors):
        del box_encodings, class_scores, anchors
        return (tf.constant(0.0, name="boxes"), tf.constant(0.0, name="classes"),
                tf.constant(0.0, name="scores"), tf.constant(0.0, name="num_detections"))

    class Detector(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, N, 4], tf.float32, name="codes"),
                                      tf.TensorSpec([1, N, C], tf.float32, name="logits")])
        def serve(self, codes, logits):
            boxes, classes, scores, count = postprocess(codes * 1.0, tf.sigmoid(logits),
                                                        tf.constant(ANCHORS))
            return {"detection_boxes": boxes, "detection_classes": classes,
                    "detection_scores": scores, "num_detections": count}

    return Detector()


def _convert(module, uint8_outputs):
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [module.serve.get_concrete_function()], module)
    converter.allow_custom_ops = True
    if uint8_outputs:
        def representative():
            rng = np.random.RandomState(0)
            for _ in range(20):  # inputs in signature order: codes, logits
                yield [rng.uniform(-1, 1, (1, N, 4)).astype(np.float32),
                       rng.uniform(-6, 6, (1, N, C)).astype(np.float32)]
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


def _run(model, codes, logits):
    interpreter = litert.Interpreter(model_content=model)
    interpreter.allocate_tensors()
    for d in interpreter.get_input_details():
        x = codes if "codes" in d["name"] else logits
        if d["dtype"] != np.float32:
            scale, zero_point = d["quantization"]
            x = np.clip(np.round(x / scale) + zero_point, 0, 255).astype(d["dtype"])
        interpreter.set_tensor(d["index"], x)
    interpreter.invoke()
    details = interpreter.get_output_details()
    arrays = [interpreter.get_tensor(d["index"]) for d in details]
    return details, arrays, signature_outputs(interpreter)


@pytest.fixture(scope="module")
def models():
    module = _build_module()
    return {"float": _convert(module, False), "uint8": _convert(module, True)}


def _inputs(seed):
    rng = np.random.RandomState(seed)
    classes = rng.randint(0, C, size=N)
    classes[:3] = [0, 1, 2]  # every class appears
    logits = np.full((1, N, C), -5.0, np.float32)
    logits[0, np.arange(N), classes] = 4.0 - 0.6 * np.arange(N)  # distinct, descending scores
    codes = rng.uniform(-0.5, 0.5, size=(1, N, 4)).astype(np.float32)
    return codes, logits, classes


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_uint8_and_float_conversions_give_the_same_classes(models, seed):
    codes, logits, classes = _inputs(seed)
    f_details, f_arrays, f_sig = _run(models["float"], codes, logits)
    q_details, q_arrays, q_sig = _run(models["uint8"], codes, logits)

    # The situation this guards against: the uint8 conversion stores class ids quantized
    # (3 classes -> scale 2/255), so class 1 reads back as 0.996.
    position = [d["index"] for d in q_details].index(q_sig["detection_classes"])
    q_classes = q_details[position]
    assert q_classes["dtype"] == np.uint8
    assert q_classes["quantization"][0] == pytest.approx(2.0 / 255, rel=1e-3)
    raw = dequantize(q_arrays[position], *q_classes["quantization"])[0]
    assert 0.99 < raw[classes == 1].min() < 1.0
    assert (raw.astype(np.int32) != classes).any()  # truncation gets some classes wrong

    det_f = decode_postprocess_outputs(f_details, f_arrays, f_sig)
    det_q = decode_postprocess_outputs(q_details, q_arrays, q_sig)
    # Scores descend with the anchor index, so detections come out in anchor order.
    assert det_f.class_ids.tolist() == classes.tolist()
    assert det_q.class_ids.tolist() == classes.tolist()
    np.testing.assert_allclose(det_q.scores, det_f.scores, atol=0.01)
    np.testing.assert_allclose(det_q.boxes, det_f.boxes, atol=0.01)
    expected_scores = 1 / (1 + np.exp(-(4.0 - 0.6 * np.arange(N))))
    np.testing.assert_allclose(det_f.scores, expected_scores, atol=1e-5)


def test_mapping_uses_the_signature_not_the_output_order(models):
    codes, logits, classes = _inputs(0)
    details, arrays, sig = _run(models["float"], codes, logits)
    assert sorted(sig) == ["detection_boxes", "detection_classes", "detection_scores", "num_detections"]
    # This converter puts count first; the signature, not the position, says which is which.
    by_index = {d["index"]: a for d, a in zip(details, arrays)}
    np.testing.assert_array_equal(by_index[sig["detection_classes"]][0], classes.astype(np.float32))
    det = decode_postprocess_outputs(details, arrays, sig)
    assert det.class_ids.tolist() == classes.tolist()


def test_foreign_models_run_on_one_thread_unless_told(models, tmp_path):
    """A model ending in TFLite_Detection_PostProcess gets 1 CPU thread by default (its regular NMS
    drops classes on some thread counts); an explicit thread count is kept; bundles are untouched."""
    from app.inference import runtime
    from app.config import AppConfig
    from app.inference.workers import foreign_threads
    from conftest import ROOT

    path = tmp_path / "foreign.tflite"
    path.write_bytes(models["uint8"])
    demo_int8 = str(ROOT / "models" / "demo" / "model_int8.tflite")
    assert runtime.has_detection_postprocess(str(path))
    assert not runtime.has_detection_postprocess(demo_int8)
    assert foreign_threads(AppConfig(model=str(path)), str(path)) == 1
    assert foreign_threads(AppConfig(model=str(path), num_threads=3), str(path)) == 3
    assert foreign_threads(AppConfig(model=demo_int8), demo_int8) == 0
