"""The TFLite_Detection_PostProcess variant of the committed demo bundle, built and converted for real.

The demo bundle's float network (saved_model/) is wrapped with a sigmoid and the
`experimental_implements` placeholder, converted by TensorFlow's converter (uint8 input,
int8 body, float post-processing outputs), and run in ai_edge_litert. Its detections
must match what the bundle's own int8 model + anchors + decode_ssd give, and the app's
foreign-model path (ForeignReader/ForeignDecoder, InputWriter) must read it correctly.
"""

import json
import os
import re

import numpy as np
import pytest

from app.check.agreement import box_iou, pooled_agreement
from app.model.bundle import load_bundle
from training import evaluate, postprocess_model
from training.config import load_config

from conftest import ROOT
from export_support import synthetic_examples

litert = pytest.importorskip("ai_edge_litert.interpreter")

DEMO = str(ROOT / "models" / "demo")


def _attrs(signature):
    return {k: v for k, v in re.findall(r'key: "(\w+)" value \{ \w: ([^ ]+) \}', signature)}


def test_implements_signature_carries_the_settings():
    nms = postprocess_model.NmsSettings(max_detections=15, score_threshold=0.4, iou_threshold=0.6,
                                        detections_per_class=10, use_regular_nms=False)
    attrs = _attrs(postprocess_model.implements_signature(3, nms, (10.0, 10.0, 5.0, 5.0)))
    # Fast NMS without detections_per_class, as the OD API's real export has it (tests/test_odapi_export.py).
    assert attrs == {"max_detections": "15", "max_classes_per_detection": "1",
                     "use_regular_nms": "false", "nms_score_threshold": "0.4", "nms_iou_threshold": "0.6",
                     "y_scale": "10.0", "x_scale": "10.0", "h_scale": "5.0", "w_scale": "5.0",
                     "num_classes": "3"}
    regular = _attrs(postprocess_model.implements_signature(3, nms._replace(use_regular_nms=True)))
    assert regular["use_regular_nms"] == "true" and regular["detections_per_class"] == "10"
    assert postprocess_model.NmsSettings(15, 0.4, 0.6, 10).use_regular_nms  # per-class, like decode_ssd
    with pytest.raises(ValueError, match="num_classes"):
        postprocess_model.implements_signature(0, nms)
    with pytest.raises(ValueError, match="iou_threshold"):
        postprocess_model.implements_signature(3, nms._replace(iou_threshold=0.0))


@pytest.fixture(scope="module")
def demo_variant(tmp_path_factory):
    """model_int8_postprocess.tflite of the demo bundle via export's own step, plus the reference."""
    bundle = load_bundle(DEMO)
    cfg = load_config()
    folder = str(tmp_path_factory.mktemp("pp"))
    examples = synthetic_examples(20, height=240, width=280, seed=5, max_objects=6)
    images = [evaluate.decode_image(e) for e in examples]
    pp = cfg.postprocess
    live = dict(score_threshold=pp.score_threshold, iou_threshold=pp.iou_threshold,
                max_detections=pp.max_detections, max_detections_per_class=pp.max_detections_per_class)
    int8 = bundle.models["int8"]
    expected = evaluate.predict_tflite(int8.file, examples, bundle, live, int8.outputs)
    calibration = [evaluate.decode_image(e) for e in synthetic_examples(20, 240, 280, seed=9, max_objects=6)]
    network = postprocess_model.load_network(os.path.join(DEMO, "saved_model"))
    entry = postprocess_model.write_for_bundle(network, bundle, len(bundle.labels), pp, calibration, folder,
                                               reference=(images, expected), log=lambda line: None)
    path = os.path.join(folder, entry["file"])
    return {"entry": entry, "path": path, "images": images, "expected": expected, "bundle": bundle,
            "got": postprocess_model.run_model(path, images)}


def test_variant_is_uint8_in_float_out_with_float_anchors(demo_variant):
    with open(demo_variant["path"], "rb") as f:
        content = f.read()
    assert postprocess_model.check_converted(content) == []
    scale, zero = demo_variant["entry"]["input_quantization"]
    assert scale == pytest.approx(2.0 / 255, rel=0.01) and zero in (127, 128)
    interp = litert.Interpreter(model_content=content)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    op = [o for o in interp._get_ops_details() if o["op_name"] == "TFLite_Detection_PostProcess"][0]
    anchors = interp.get_tensor(op["inputs"][2])
    # The op's anchors are the bundle's anchors, bit for bit (float, not requantized).
    np.testing.assert_array_equal(anchors, demo_variant["bundle"].anchors)
    scores_in = tensors[op["inputs"][1]]
    assert list(scores_in["shape"]) == [1, len(anchors), 4]  # background column + 3 classes


def test_variant_detections_match_the_bundle_decode(demo_variant):
    got, expected = demo_variant["got"], demo_variant["expected"]
    assert sum(len(d.scores) for d in expected) >= 40  # the scenes hold objects the demo model finds
    agreement = pooled_agreement(expected, got)
    assert agreement >= 0.9
    assert demo_variant["entry"]["agreement_with_int8"] == pytest.approx(agreement, abs=1e-9)
    ious, score_diffs = [], []
    for g, e in zip(got, expected):
        if len(g.scores) and len(e.scores):
            overlaps = box_iou(g.boxes, e.boxes)
            overlaps[g.class_ids[:, None] != e.class_ids[None, :]] = 0.0
            best = overlaps.argmax(axis=1)
            hit = overlaps.max(axis=1) >= 0.5
            ious.extend(overlaps.max(axis=1)[hit])
            score_diffs.extend(np.abs(g.scores[hit] - e.scores[best[hit]]))
    assert len(ious) >= 0.9 * sum(len(d.scores) for d in got)
    # Matched boxes overlap closely; a rare pair differs where the two NMS implementations keep
    # different members of a cluster (seen: one pair at IoU 0.54 in 80), so check the bulk.
    assert np.median(ious) >= 0.9 and np.percentile(ious, 10) >= 0.8
    assert np.median(score_diffs) <= 0.05


def test_app_foreign_path_reads_the_variant(demo_variant):
    """The live app's reader/decoder map the outputs to the op's own (boxes, classes, scores, count)."""
    from app.inference import live_model
    from app.model import postprocess, preprocess
    interp = litert.Interpreter(model_path=demo_variant["path"])
    interp.allocate_tensors()
    op = [o for o in interp._get_ops_details() if o["op_name"] == "TFLite_Detection_PostProcess"][0]
    reader = live_model.ForeignReader(interp, demo_variant["path"])
    mapping = postprocess.map_postprocess_outputs(reader.details, reader.signature)
    by_position = [int(d["index"]) for d in reader.details]
    assert {role: by_position[i] for role, i in mapping.items()} == dict(
        zip(("boxes", "classes", "scores", "count"), [int(i) for i in op["outputs"]]))
    writer = live_model.InputWriter(interp)
    assert writer.mode == "copy"  # uint8 pixels go straight in: the quantization is (2/255, 127|128)
    decoder = live_model.ForeignDecoder(reader, {"score_threshold": 0.4, "max_detections": 15})
    for image, want in list(zip(demo_variant["images"], demo_variant["got"]))[:5]:
        writer.write(preprocess.bgr_to_rgb(image))  # the app is fed BGR frames
        interp.invoke()
        det = decoder.decode(reader.read())
        np.testing.assert_allclose(det.boxes, want.boxes, atol=1e-6)
        np.testing.assert_array_equal(det.class_ids, want.class_ids)
        assert set(det.class_ids.tolist()) <= {0, 1, 2}


def test_nms_settings_the_variant_cannot_honour_are_named(demo_variant, tmp_path, caplog):
    """Its NMS runs inside TFLite_Detection_PostProcess: the app logs that iou_threshold and
    class-agnostic NMS do not apply; score thresholds alone give no such line."""
    from app.config import AppConfig
    from app.inference.workers import LiveModel
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(demo_variant["bundle"].labels) + "\n")
    cfg = AppConfig(model=demo_variant["path"], labels=str(labels), runtime="cpu")
    live = LiveModel(cfg, {"score_threshold": 0.5, "class_score_thresholds": {}})
    assert live.thresholds["score_threshold"] == 0.5 and "do not apply" not in caplog.text
    LiveModel(cfg, {"iou_threshold": 0.3, "class_agnostic_nms": True, "class_score_thresholds": {}})
    warning = [r.getMessage() for r in caplog.records if "do not apply" in r.getMessage()]
    assert len(warning) == 1 and "iou_threshold, class_agnostic_nms" in warning[0]


def test_bundle_reads_an_optional_postprocess_model(demo_variant, tmp_path):
    import shutil
    bundle = str(tmp_path / "b")
    shutil.copytree(DEMO, bundle, ignore=shutil.ignore_patterns("saved_model", "report.html"))
    shutil.copy(demo_variant["path"], bundle)
    with open(os.path.join(bundle, "model.json")) as f:
        meta = json.load(f)
    meta["postprocess_model"] = demo_variant["entry"]
    with open(os.path.join(bundle, "model.json"), "w") as f:
        json.dump(meta, f)
    assert load_bundle(bundle).postprocess_model == os.path.join(bundle, postprocess_model.POSTPROCESS_FILE)
    assert load_bundle(DEMO).postprocess_model is None
    os.remove(os.path.join(bundle, postprocess_model.POSTPROCESS_FILE))
    from app.errors import UserError
    with pytest.raises(UserError, match="postprocess_model.file"):
        load_bundle(bundle)
