"""Export pieces on a tiny real SSD: converters, full-integer checks, output naming, gate, bundle writing."""

import os
import stat

import numpy as np
import pytest

from app.errors import UserError
from app.model.postprocess import Detections
from training import bundle_writer, convert_tflite, fidelity
from training.config import load_config

from export_support import synthetic_examples, tiny_config


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """A 96x96 untrained SSD as SavedModel, float and uint8 TFLite (real converter)."""
    from training import evaluate
    from training.model import build_ssd
    cfg = tiny_config(load_config())
    model = build_ssd(cfg.model)
    folder = tmp_path_factory.mktemp("converted")
    images = [evaluate.decode_image(e) for e in synthetic_examples(24)]
    sm = str(folder / "saved_model")
    convert_tflite.save_batch1_savedmodel(model, 96, 96, sm)
    float_bytes = convert_tflite.to_float_tflite(sm)
    int8_bytes = convert_tflite.to_int8_tflite(sm, convert_tflite.calibration_inputs(images, 96, 96))
    (folder / "f.tflite").write_bytes(float_bytes)
    (folder / "q.tflite").write_bytes(int8_bytes)
    return {"model": model, "cfg": cfg, "dir": folder, "saved_model": sm, "images": images,
            "float": float_bytes, "int8": int8_bytes}


def test_int8_model_passes_checks_with_pixel_quantization(converted):
    convert_tflite.check_full_integer(converted["int8"])
    q = convert_tflite.quantization_params(converted["int8"])
    assert q["input"]["dtype"] == "uint8" and q["input"]["shape"] == [1, 96, 96, 3]
    assert q["input"]["scale"] == pytest.approx(2 / 255, rel=1e-3)
    assert q["input"]["zero_point"] in (127, 128)
    assert [o["dtype"] for o in q["outputs"]] == ["uint8", "uint8"]


def test_outputs_found_by_signature_name_and_float_twin_matches_keras(converted):
    from training.tflite_model import TfliteModel
    n = converted["model"].outputs[0].shape[1]
    for name in ("f.tflite", "q.tflite"):
        tm = TfliteModel(converted["dir"] / name)
        boxes_idx, logits_idx = tm.output_indices["box_encodings"], tm.output_indices["class_logits"]
        shapes = {d["index"]: list(d["shape"]) for d in tm.interp.get_output_details()}
        assert shapes[boxes_idx] == [1, n, 4] and shapes[logits_idx] == [1, n, 3]
    x = np.random.RandomState(0).uniform(-1, 1, (1, 96, 96, 3)).astype(np.float32)
    keras_boxes, keras_logits = [np.asarray(t) for t in converted["model"](x, training=False)]
    tm = TfliteModel(converted["dir"] / "f.tflite")
    boxes, logits = tm.invoke(x)
    np.testing.assert_allclose(boxes, keras_boxes, atol=1e-4)
    np.testing.assert_allclose(logits, keras_logits, atol=1e-4)


def test_dynamic_range_model_fails_every_check(converted):
    """Optimize.DEFAULT without representative data keeps float input/outputs and float ops."""
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_saved_model(converted["saved_model"])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    with pytest.raises(convert_tflite.ConversionCheckError) as err:
        convert_tflite.check_full_integer(conv.convert())
    text = str(err.value)
    assert "is float32, expected uint8" in text
    assert "still compute in float" in text


def test_raw_pixel_calibration_is_caught(converted):
    """The user's calibration (raw 0..255 floats) gives input scale ~1 and fails the check."""
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_saved_model(converted["saved_model"])
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([tf.image.resize(i[None].astype(np.float32), (96, 96)).numpy()]
                                           for i in converted["images"])
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.uint8
    bad = conv.convert()
    q = convert_tflite.quantization_params(bad)["input"]
    assert q["scale"] == pytest.approx(1.0, abs=0.05) and q["zero_point"] == 0
    with pytest.raises(convert_tflite.ConversionCheckError, match="input quantization is"):
        convert_tflite.check_full_integer(bad)


def test_gate_numbers():
    assert fidelity.gate(0.60, 0.589, 0.9, 0.02, 0.6) == (True, [])
    passed, reasons = fidelity.gate(0.60, 0.587, 0.9, 0.02, 0.6)
    assert not passed and "0.5870 < (1 - 0.02) x float mAP 0.6000 = 0.5880" in reasons[0]
    passed, reasons = fidelity.gate(0.60, 0.60, 0.5, 0.02, 0.6)
    assert not passed and "agreement 0.500 < 0.600" in reasons[0]
    assert not fidelity.gate(0.0, 0.0, 1.0, 0.02, 0.6)[0]
    with pytest.raises(ValueError, match="max_drop"):
        fidelity.gate(0.5, 0.5, 1.0, 1.5, 0.6)


def test_live_detections_filters_by_score_and_count():
    d = Detections(np.arange(20, dtype=np.float32).reshape(5, 4), np.array([.9, .8, .5, .3, .1], np.float32),
                   np.zeros(5, np.int32))
    live = fidelity.live_detections(d, 0.4, 2)
    assert live.scores.tolist() == pytest.approx([0.9, 0.8]) and live.boxes.shape == (2, 4)
    assert len(fidelity.live_detections(d, 0.4, 15).scores) == 3


def test_bundle_destination_and_atomic_publish(tmp_path):
    out = tmp_path / "models" / "b"
    bundle_writer.check_destination(out, force=False)
    staged = bundle_writer.staging_dir(out)
    open(os.path.join(staged, "model.json"), "w").write("{}")
    bundle_writer.publish(staged, out, force=False)
    assert (out / "model.json").read_text() == "{}"
    assert stat.S_IMODE(out.stat().st_mode) == 0o755  # readable by a service's user, not mkdtemp's 0700
    out.chmod(0o750)
    with pytest.raises(UserError, match="already exists.*--force"):
        bundle_writer.check_destination(out, force=False)
    staged = bundle_writer.staging_dir(out)
    open(os.path.join(staged, "model.json"), "w").write('{"v": 2}')
    bundle_writer.publish(staged, out, force=True)
    assert (out / "model.json").read_text() == '{"v": 2}'
    assert stat.S_IMODE(out.stat().st_mode) == 0o750  # the replaced bundle's mode is kept
    assert sorted(p.name for p in out.parent.iterdir()) == ["b"]  # no temp or old dirs left


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_out_is_a_user_error(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(UserError, match="not writable"):
            bundle_writer.check_destination(locked / "b", force=False)
    finally:
        locked.chmod(0o700)


def test_out_under_a_file_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot create its parent folder"):
        bundle_writer.check_destination(tmp_path / "file" / "b", force=False)


@pytest.fixture(scope="module")
def tiny_workdir(tmp_path_factory):
    """A workdir as training writes it (config.yaml, checkpoint, state.json) for a tiny SSD."""
    import tensorflow as tf
    from training import workdir as run_dir
    from training.config import render_config
    from training.model import build_ssd
    cfg = tiny_config(load_config())
    wd = tmp_path_factory.mktemp("run")
    run_dir.write_config(str(wd), cfg)
    path = tf.train.Checkpoint(model=build_ssd(cfg.model)).save(str(wd / run_dir.CHECKPOINTS / "ckpt"))
    run_dir.write_state(str(wd), {"checkpoint": os.path.basename(path), "phase": "float",
                                  "quantization_aware": False, "step": 1})
    config = wd.parent / "tiny.yaml"
    config.write_text(render_config(cfg))
    return {"workdir": wd, "config": config}


def _export_cli(capsys, *argv):
    from app.errors import run_cli
    from training.cli import main
    code = run_cli(main, ["export"] + [str(a) for a in argv], prog="edgedet-train")
    return code, capsys.readouterr().err.strip()


def _leftovers(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_cli_workdir_without_checkpoint_exits_2(tmp_path, tiny_workdir, capsys):
    (tmp_path / "empty").mkdir()
    code, err = _export_cli(capsys, "--config", tiny_workdir["config"], "--workdir", tmp_path / "empty",
                            "--out", tmp_path / "models" / "x")
    assert code == 2 and "no state.json (no checkpoint)" in err and len(err.splitlines()) == 1
    assert _leftovers(tmp_path / "models") == []


def test_cli_config_not_matching_checkpoint_exits_2(tmp_path, tiny_workdir, capsys):
    default = tmp_path / "default.yaml"
    default.write_text("model: {input_height: 192}\n")
    code, err = _export_cli(capsys, "--config", default, "--workdir", tiny_workdir["workdir"],
                            "--out", tmp_path / "models" / "x")
    assert code == 2 and "was trained with" in err and "model.depth_multiplier = 0.5" in err
    assert _leftovers(tmp_path / "models") == []


def test_cli_existing_bundle_or_unwritable_out_exits_2(tmp_path, tiny_workdir, capsys):
    existing = tmp_path / "models" / "x"
    existing.mkdir(parents=True)
    (existing / "model.json").write_text("{}")
    code, err = _export_cli(capsys, "--config", tiny_workdir["config"], "--workdir", tiny_workdir["workdir"],
                            "--out", existing)
    assert code == 2 and "--force" in err
    assert _leftovers(tmp_path / "models") == ["x"] and (existing / "model.json").read_text() == "{}"
    (tmp_path / "afile").write_text("")
    code, err = _export_cli(capsys, "--config", tiny_workdir["config"], "--workdir", tiny_workdir["workdir"],
                            "--out", tmp_path / "afile" / "x")
    assert code == 2 and "argument --out" in err and "afile is a file, not a folder" in err
