"""`edgedet-train convert-savedmodel` on an OD-API-shaped SavedModel, converted for real.

The SavedModel here is built by training.postprocess_model from the committed demo
bundle's float network: the same serving signature as export_tflite_graph_tf2.py (input
`input` float32 [1, H, W, 3] in [-1, 1], outputs count/scores/classes/boxes of
TFLite_Detection_PostProcess), with the real export's op options (fast NMS, 10 detections,
score threshold 0). tests/test_odapi_export.py converts the real OD API export of
../shared/fixtures/odapi. The result is run by the real app in a subprocess."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from app.errors import run_cli
from app.model.postprocess import Detections
from training import convert, postprocess_model
from training.cli import main

from conftest import ROOT

DEMO = ROOT / "models" / "demo"


@pytest.fixture(scope="module")
def odapi_savedmodel(tmp_path_factory):
    """(SavedModel dir, folder of 40 synthetic JPEGs)."""
    import cv2

    from app.model.bundle import load_bundle
    from app.capture.synthetic import render_scene
    folder = tmp_path_factory.mktemp("odapi")
    bundle = load_bundle(str(DEMO))
    # As export_tflite_graph_tf2.py writes by default (the fixture's real saved_model/ has these):
    # fast NMS, 10 detections, and the pipeline's 1e-8 score threshold printed with %f, i.e. 0.
    nms = postprocess_model.NmsSettings(max_detections=10, score_threshold=0.0, iou_threshold=0.6,
                                        detections_per_class=10, use_regular_nms=False)
    module = postprocess_model.build_module(postprocess_model.load_network(str(DEMO / "saved_model")),
                                            bundle.anchors, len(bundle.labels), bundle.input_height,
                                            bundle.input_width, nms, bundle.box_coder_scales)
    saved = folder / "saved_model"
    postprocess_model.save_savedmodel(module, str(saved))
    images = folder / "images"
    images.mkdir()
    rng = np.random.RandomState(11)
    for i in range(40):
        cv2.imwrite(str(images / "{:03d}.jpg".format(i)), render_scene(rng, 240, 280, max_objects=6)[0])
    return str(saved), str(images)


def _cli(capsys, *argv):
    code = run_cli(main, ["convert-savedmodel"] + [str(a) for a in argv], prog="edgedet-train")
    captured = capsys.readouterr()
    return code, captured.out, captured.err.strip()


def test_converts_gates_and_writes_a_bundle_the_app_runs(odapi_savedmodel, tmp_path, capsys):
    saved, images = odapi_savedmodel
    out = tmp_path / "models" / "mine"
    # The gate's default 2% sits within a point of what 40 images measure for the demo network
    # (0.979 to 0.992 across demo re-trainings), so this test asks for 5%: it checks the
    # conversion and the bundle, and tests/test_export.py checks the gate's arithmetic.
    code, stdout, err = _cli(capsys, "--saved-model", saved, "--images", images, "--out", out,
                             "--labels", DEMO / "labels.txt", "--max-drop", "0.05")
    assert code == 0, stdout + err
    assert sorted(os.listdir(str(tmp_path / "models"))) == ["mine"]  # no temp dir left behind
    meta = json.loads((out / "model.json").read_text())
    scale, zero = meta["postprocess_model"]["input_quantization"]
    assert scale == pytest.approx(2.0 / 255, rel=0.01) and zero in (127, 128)  # not the user's (1.0, 0)
    fid = meta["fidelity"]
    assert fid["passed"] and fid["agreement"] >= 0.9
    assert fid["int8"]["map50"] >= 0.95 and fid["int8"]["map"] >= 0.9
    assert meta["labels"] == ["circle", "square", "triangle"]
    with open(str(out / convert.INT8_FILE), "rb") as f:
        assert postprocess_model.check_converted(f.read()) == []

    # The real app runs the bundle folder: the int8 model live with the bundle's labels, checked
    # against the float model of the same SavedModel every 0.05 s.
    config = tmp_path / "app.yaml"
    config.write_text("reference: {interval_s: 0.05}\n")
    model = out / convert.INT8_FILE
    proc = subprocess.run([sys.executable, "-m", "app", "--model", str(out), "--config", str(config),
                           "--source", images, "--headless", "--events", "-", "--max-frames", "40"],
                          cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    events = [json.loads(line) for line in proc.stdout.decode().splitlines() if line.startswith("{")]
    frames = [e for e in events if e.get("type") == "detections"]
    assert len(frames) == 40
    # Same detections as the model run directly on the same (name-sorted) images at the app's threshold.
    direct = postprocess_model.run_model(str(model), convert.read_images(images)[:5])
    assert [len(f["detections"]) for f in frames[:5]] == [int(np.sum(d.scores >= 0.4)) for d in direct]
    assert sum(len(f["detections"]) for f in frames) >= 5
    assert {d["label"] for f in frames for d in f["detections"]} <= {"circle", "square", "triangle"}
    checks = [e for e in events if e.get("event") == "reference_check" and e["agreement"] is not None]
    # The start-up check (4 sample frames, always the same) must agree closely. The sampled checks
    # are one frame each, picked by timing: on this bundle 013.jpg agrees 0.857 and 015.jpg 0.8
    # (one box of 3-4 differs; a fresh-clone run sampled 015), so they must clear the app's own
    # refusal bound, reference.min_agreement 0.6.
    assert checks and checks[0]["agreement"] >= 0.9, checks
    assert all(c["agreement"] >= 0.6 for c in checks), checks
    # The start-up check runs on the bundle's samples (the first calibration images, as PNG).
    assert meta["samples"] == ["samples/{}.png".format(i) for i in range(4)]
    assert [c["source"] for c in checks][:1] == ["samples"], checks
    assert not [e for e in events if e.get("event") in ("reference_mismatch", "fallback")]


def _dets(boxes, scores, classes):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int32))


def test_compare_uses_float_detections_as_truth():
    images = [np.zeros((100, 120, 3), np.uint8)] * 2
    f = [_dets([[0.1, 0.1, 0.5, 0.5], [0.6, 0.6, 0.9, 0.9]], [0.9, 0.3], [0, 1]),
         _dets([[0.2, 0.2, 0.7, 0.6]], [0.8], [2])]
    same = convert.compare(f, f, images, 3, 0.02, 0.4)
    assert same["int8"]["map"] == pytest.approx(1.0) and same["agreement"] == 1.0 and same["passed"]
    # Box 2 of image 1 is under the live threshold: not truth, and its absence costs nothing.
    q = [_dets([[0.1, 0.1, 0.5, 0.5]], [0.85], [0]), _dets([[0.2, 0.2, 0.7, 0.6]], [0.8], [1])]
    wrong_class = convert.compare(f, q, images, 3, 0.02, 0.4)
    assert wrong_class["agreement"] == pytest.approx(0.5)
    # COCO averages over classes with truth: class 0 AP 1, class 2 AP 0 (class 1 has none).
    assert wrong_class["int8"]["map50"] == pytest.approx(0.5, abs=0.01)
    assert not wrong_class["passed"] and len(wrong_class["reasons"]) == 2


def test_bad_input_exits_2_with_one_line_and_writes_nothing(odapi_savedmodel, tmp_path, capsys):
    saved, images = odapi_savedmodel
    out = tmp_path / "models" / "x"
    not_saved = tmp_path / "empty"
    not_saved.mkdir()
    few = tmp_path / "few"
    few.mkdir()
    (few / "a.jpg").write_bytes(open(os.path.join(images, "000.jpg"), "rb").read())
    cases = [
        ((tmp_path / "missing", images), "no such folder"),
        ((not_saved, images), "not a SavedModel (no saved_model.pb)"),
        ((DEMO / "saved_model", images), "expected one input 'input' float32 [1, H, W, 3]"),
        ((saved, tmp_path / "noimages"), "--images"),
        ((saved, few), "need at least 10"),
    ]
    for (saved_model, image_dir), message in cases:
        code, _, err = _cli(capsys, "--saved-model", saved_model, "--images", image_dir, "--out", out)
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    out.mkdir(parents=True)
    code, _, err = _cli(capsys, "--saved-model", saved, "--images", images, "--out", out)
    assert code == 2 and "--force" in err
    assert sorted(os.listdir(str(tmp_path / "models"))) == ["x"] and os.listdir(str(out)) == []
