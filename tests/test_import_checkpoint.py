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
    from app.anchors import anchors_from_config
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
    assert code == 2 and "nope.index is missing" in err
    code, _, err = _run(["--pipeline", PIPELINE, "--checkpoint", CHECKPOINT,
                         "--workdir", imported[0]], capsys)
    assert code == 2 and "already holds a training run (step 3000)" in err
