"""`edgedet-train import-checkpoint` on the real OD API checkpoint in ../shared/fixtures/odapi.

The fixture was trained by the genuine TF2 OD API (odapi/README.md); its raw_outputs.npz holds the
OD API's own preprocessed inputs, raw head outputs and anchors for 5 eval images, so the imported
edgedet model is checked against the real thing, not against a stand-in.
"""

import json

import numpy as np
import pytest

from app.errors import run_cli
from training import import_checkpoint, odapi_checkpoint
from training.cli import main

from conftest import FIXTURES

ODAPI = FIXTURES / "odapi"
PIPELINE = ODAPI / "pipeline.config"
CHECKPOINT = ODAPI / "checkpoint"


def _run(argv, capsys):
    code = run_cli(main, ["import-checkpoint"] + [str(a) for a in argv], prog="edgedet-train")
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def odapi_dir():
    if not PIPELINE.exists():
        pytest.skip("../shared/fixtures/odapi is not laid out beside the project")
    return ODAPI


@pytest.fixture(scope="module")
def imported(odapi_dir, tmp_path_factory):
    """(workdir, model restored from it, cfg, state) after one real import-checkpoint run."""
    from training.train import restore_model
    workdir = tmp_path_factory.mktemp("imported") / "run"
    code = run_cli(main, ["import-checkpoint", "--pipeline", str(PIPELINE), "--checkpoint",
                          str(CHECKPOINT), "--workdir", str(workdir)], prog="edgedet-train")
    assert code == 0
    model, cfg, state = restore_model(str(workdir))
    return workdir, model, cfg, state


@pytest.fixture(scope="module")
def raw(odapi_dir):
    return np.load(str(ODAPI / "raw_outputs.npz"))


def test_raw_head_outputs_match_the_odapi(imported, raw):
    _, model, _, _ = imported
    boxes, logits = (np.asarray(t) for t in model(raw["preprocessed_inputs"], training=False))
    assert boxes.shape == (5, 630, 4) and logits.shape == (5, 630, 3)
    np.testing.assert_allclose(boxes, raw["box_encodings"], atol=1e-4)
    # The OD API's column 0 is background; edgedet's columns are the three classes.
    np.testing.assert_allclose(logits, raw["class_predictions_with_background"][..., 1:], atol=1e-4)


def test_anchors_match_the_odapi_corner_anchors(imported, raw):
    from app.model.anchors import anchors_from_config
    yc, xc, h, w = anchors_from_config(imported[2].model).T
    corners = np.stack([yc - h / 2, xc - w / 2, yc + h / 2, xc + w / 2], axis=1)
    np.testing.assert_allclose(corners, raw["anchors"], atol=1e-6)


def test_every_entry_is_loaded_or_skipped_with_a_reason(imported):
    workdir, _, _, state = imported
    report = json.loads((workdir / import_checkpoint.IMPORT_REPORT).read_text())
    listed = [line.split("\t")[0].replace(odapi_checkpoint.SUFFIX, "")
              for line in (ODAPI / "checkpoint_variables.txt").read_text().splitlines()]
    assert len(listed) == 534
    assert len(report["loaded"]) == 324  # every model/ weight tensor of the README
    skipped = set(report["skipped"])
    assert set(listed) == set(report["loaded"]) | skipped
    reasons = [report["skipped"][k] for k in skipped - set(report["loaded"])]
    assert len(reasons) == 210 and sum("optimizer slot" in r for r in reasons) == 204
    background = [k for k in skipped & set(report["loaded"])]
    assert len(background) == 12 and all("class_predictions_with_background" in k for k in background)
    assert state["step"] == 3000 and state["phase"] == "float"


def test_unmatched_entry_is_an_error_naming_it(imported):
    from training import model as ssd_model
    cfg = imported[2]
    entries = odapi_checkpoint.read_entries(str(CHECKPOINT / "ckpt-4"))
    entries["model/_box_predictor/_prediction_heads/extra/0/kernel"] = (1, 1, 8, 8)
    with pytest.raises(Exception) as e:
        odapi_checkpoint.plan(ssd_model.build_ssd(cfg.model), cfg.model, entries)
    assert "model/_box_predictor/_prediction_heads/extra/0/kernel" in str(e.value)


def test_pipeline_that_does_not_match_exits_2(odapi_dir, tmp_path, capsys):
    other = tmp_path / "pipeline.config"
    other.write_text(PIPELINE.read_text().replace("depth_multiplier: 0.5", "depth_multiplier: 0.75"))
    code, _, err = _run(["--pipeline", other, "--checkpoint", CHECKPOINT, "--workdir",
                         tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "classification_backbone/layer_with_weights-0/kernel" in err and "[3, 3, 3, 16]" in err
    assert not (tmp_path / "run").exists()


def test_checkpoint_of_another_architecture_exits_2(odapi_dir, tmp_path, capsys):
    import tensorflow as tf
    dense = tf.keras.layers.Dense(4)
    dense.build((None, 8))
    prefix = tf.train.Checkpoint(model=dense).save(str(tmp_path / "other" / "ckpt"))
    code, _, err = _run(["--pipeline", PIPELINE, "--checkpoint", prefix, "--workdir",
                         tmp_path / "run"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "has no variable model/_feature_extractor/classification_backbone" in err


def test_missing_checkpoint_and_existing_workdir_exit_2(imported, tmp_path, capsys):
    code, _, err = _run(["--pipeline", PIPELINE, "--checkpoint", tmp_path / "nope",
                         "--workdir", tmp_path / "run"], capsys)
    assert code == 2 and "nope: not a checkpoint (no " in err and "nope.index" in err
    code, _, err = _run(["--pipeline", PIPELINE, "--checkpoint", CHECKPOINT,
                         "--workdir", imported[0]], capsys)
    assert code == 2 and "already holds a training run" in err


def _reference():
    from app.model.postprocess import Detections
    ref = json.loads((ODAPI / "reference_detections.json").read_text())
    dets = []
    for image in ref["images"]:
        d = image["detections"]
        dets.append(Detections(np.array([x["box"] for x in d], np.float32).reshape(-1, 4),
                               np.array([x["score"] for x in d], np.float32),
                               np.array([x["class_id"] for x in d], np.int32)))
    return ref, dets


@pytest.fixture(scope="module")
def proof(imported):
    """(OD API reference Detections, edgedet's Detections) on the 60 eval images.

    Images are decoded as the OD API decoded them (tf.io.decode_jpeg); from there on it is
    edgedet: app.model.preprocess with the workdir's model.resize, the Keras model restored from the
    workdir, app.model.postprocess.decode_ssd with the pipeline's post-processing settings.
    """
    import tensorflow as tf
    from app.model import preprocess
    from app.model.anchors import anchors_from_config
    from app.model.postprocess import decode_ssd
    _, model, cfg, _ = imported
    ref, ref_dets = _reference()
    anchors, pp, m = anchors_from_config(cfg.model), cfg.postprocess, cfg.model
    ours = []
    for image in ref["images"]:
        rgb = tf.io.decode_jpeg(tf.io.read_file(str(ODAPI / "eval_images" / image["file_name"])),
                                channels=3).numpy()
        x = preprocess.image_to_float_input(rgb, m.input_height, m.input_width, method=m.resize)
        boxes, logits = model(x, training=False)
        ours.append(decode_ssd(np.asarray(boxes)[0], np.asarray(logits)[0], anchors,
                               score_threshold=ref["score_threshold"], iou_threshold=pp.iou_threshold,
                               max_detections=pp.max_detections,
                               max_detections_per_class=pp.max_detections_per_class))
    return ref_dets, ours


def test_resize_reproduces_the_odapi_preprocessed_input(odapi_dir, raw):
    import tensorflow as tf
    from app.model import preprocess
    rgb = tf.io.decode_jpeg(tf.io.read_file(str(ODAPI / "eval_images" / "eval_0000.jpg")),
                            channels=3).numpy()
    x = preprocess.image_to_float_input(rgb, 160, 192, method="bilinear_tf1")
    np.testing.assert_allclose(x[0], raw["preprocessed_inputs"][0], atol=1e-6)
    # The half-pixel-centre resize edgedet trains with is not the OD API's.
    assert np.abs(preprocess.image_to_float_input(rgb, 160, 192)[0]
                  - raw["preprocessed_inputs"][0]).max() > 0.1


def test_imported_model_reproduces_the_odapi_detections(imported, proof):
    from app.check import agreement
    ref, ours = proof
    assert imported[2].postprocess.iou_threshold == pytest.approx(0.6)
    assert (imported[2].postprocess.max_detections, imported[2].postprocess.max_detections_per_class) \
        == (20, 10)
    assert sum(len(d.scores) for d in ref) == 1025
    score = agreement.pooled_agreement(ref, ours)
    diffs = [abs(float(a.scores[i]) - float(b.scores[j]))
             for a, b in zip(ref, ours) for i, j in agreement.matched_pairs(a, b)]
    print("agreement {:.4f}, mean score difference {:.2e} over {} matches".format(
        score, np.mean(diffs), len(diffs)))
    assert score >= 0.99
    assert np.mean(diffs) < 0.01


def test_imported_model_reproduces_the_odapi_map(imported, proof):
    from training import evaluate
    ref, ours = proof
    examples = evaluate.load_eval_examples(imported[2])
    assert [e.source_id for e in examples[:2]] == ["eval_0000.jpg", "eval_0001.jpg"]
    ref_map = evaluate.coco_metrics(examples, ref, 3)["map"]
    our_map = evaluate.coco_metrics(examples, ours, 3)["map"]
    print("COCO mAP: OD API {:.4f}, edgedet {:.4f}".format(ref_map, our_map))
    assert ref_map == pytest.approx(0.802, abs=5e-4)  # the fixture README's figure
    assert abs(our_map - ref_map) <= 0.005
