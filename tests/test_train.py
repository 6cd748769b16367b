"""training.train: QAT after the delay (fake-quant ops), resume across the boundary, NaN stop, CLI errors."""

import io
import os

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from app.capture import synthetic  # noqa: E402
from app.errors import run_cli  # noqa: E402
from training import cli, train as trainer  # noqa: E402
from training.config import app_config, load_config  # noqa: E402

replace = app_config.replace


def _tiny_cfg(steps, delay, **train_kw):
    cfg = load_config()
    q = replace(cfg.train.quantization, delay=delay)
    return replace(
        cfg, model=replace(cfg.model, input_height=64, input_width=64, depth_multiplier=0.35),
        train=replace(cfg.train, steps=steps, batch_size=4, warmup_steps=1, log_every=1,
                      checkpoint_every=delay, eval_every=0, quantization=q, **train_kw))


def _decoded(count=8, seed=0):
    rng = np.random.RandomState(seed)
    scenes = [synthetic.render_scene(rng, 72, 80) for _ in range(count)]

    def gen():
        for image, boxes, classes in scenes:
            yield {"image": image[..., ::-1], "boxes": boxes, "classes": classes}
    spec = {"image": tf.TensorSpec([None, None, 3], tf.uint8),
            "boxes": tf.TensorSpec([None, 4], tf.float32),
            "classes": tf.TensorSpec([None], tf.int32)}
    return tf.data.Dataset.from_generator(gen, output_signature=spec)


def _kernel(model, name):
    return [w.numpy() for w in model.weights if w.name.startswith(name + "/kernel")][0]


@pytest.mark.slow  # two short runs with a float and a QAT trace: 60-160 s on 2 shared cores
def test_resume_across_qat_boundary_has_fake_quant(tmp_path):
    workdir = str(tmp_path / "run")
    out = io.StringIO()
    trainer.train(_tiny_cfg(steps=3, delay=3), workdir, _decoded(), out=out)
    float_model, cfg, state = trainer.restore_model(workdir)
    assert state == {"step": 3, "phase": "float", "quantization_aware": False, "checkpoint": "ckpt-3"}
    assert cfg.model.input_height == 64  # workdir/config.yaml is the config trained with
    float_kernel = _kernel(float_model, "Conv1")

    trainer.train(_tiny_cfg(steps=5, delay=3), workdir, _decoded(), resume=True, out=out)
    assert "resumed {} at step 3 (float)".format(workdir) in out.getvalue()
    qat_model, _, state = trainer.restore_model(workdir)
    assert state["step"] == 5 and state["phase"] == "qat" and state["quantization_aware"]
    # The saved model is quantization-aware: fake-quant ops in its graph, ranges in the checkpoint.
    fn = tf.function(lambda x: qat_model(x, training=False))
    graph = fn.get_concrete_function(tf.TensorSpec([1, 64, 64, 3], tf.float32)).graph
    op_types = {op.type for op in graph.get_operations()}
    assert "FakeQuantWithMinMaxVars" in op_types
    wrapped = [l for l in qat_model.layers if type(l).__name__ == "QuantizeWrapperV2"]
    assert len(wrapped) > 50
    names = [n for n, _ in tf.train.list_variables(os.path.join(workdir, "checkpoints", "ckpt-5"))]
    assert any("kernel_min" in n for n in names)
    # QAT continued from the float weights (2 small steps), not from a fresh initialisation.
    qat_kernel = _kernel(qat_model, "Conv1")
    change = np.abs(qat_kernel - float_kernel).mean() / np.abs(float_kernel).mean()
    assert 0 < change < 0.05


def test_quantize_keeps_float_outputs():
    cfg = _tiny_cfg(steps=2, delay=1)
    from training.model import build_ssd
    model = build_ssd(cfg.model)
    x = tf.random.uniform((2, 64, 64, 3), -1, 1, seed=3)
    boxes, logits = model(x, training=False)
    qat = trainer.quantize(model)
    q_boxes, q_logits = qat(x, training=False)
    graph = tf.function(lambda t: qat(t, training=False)).get_concrete_function(
        tf.TensorSpec([1, 64, 64, 3], tf.float32)).graph
    assert "FakeQuantWithMinMaxVars" in {op.type for op in graph.get_operations()}
    # Fake quantization moves outputs by about one quantization step, not more.
    assert float(tf.reduce_max(tf.abs(q_logits - logits))) < 0.05
    assert float(tf.reduce_max(tf.abs(q_boxes - boxes))) < 0.05


def _write_config(path, text):
    path.write_text(text)
    return str(path)


def test_nan_loss_stops_with_exit_1_and_keeps_last_good_checkpoint(tmp_path, capsys):
    from training.data.synth import write_synthetic_set
    data = tmp_path / "data"
    write_synthetic_set(str(data), 8, 4, 64, 72, seed=1)
    config = _write_config(tmp_path / "c.yaml", (
        "model: {input_height: 64, input_width: 64, depth_multiplier: 0.35}\n"
        "train: {steps: 30, batch_size: 4, warmup_steps: 2, warmup_learning_rate: 0.001,\n"
        "        learning_rate_base: 1.0e+12, checkpoint_every: 1, log_every: 1, eval_every: 0,\n"
        "        quantization: {enabled: false}}\n"))
    workdir = str(tmp_path / "run")
    code = run_cli(cli.main, ["train", "--config", config, "--workdir", workdir, "--data", str(data)],
                   prog="edgedet-train")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and ("NaN or inf" in err[0] or "loss became" in err[0])
    assert "last good checkpoint: step" in err[0] and "Traceback" not in err[0]
    model, _, state = trainer.restore_model(workdir)
    assert 1 <= state["step"] < 30
    assert all(np.isfinite(w.numpy()).all() for w in model.weights)


def test_bad_config_key_exits_2_without_touching_workdir(tmp_path, capsys):
    config = _write_config(tmp_path / "bad.yaml", "train:\n  stepz: 5\n")
    workdir = tmp_path / "run"
    code = run_cli(cli.main, ["train", "--config", config, "--workdir", str(workdir)],
                   prog="edgedet-train")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "train.stepz: unknown key" in err[0]
    assert not workdir.exists()


def test_warmup_longer_than_run_is_a_user_error(tmp_path, capsys):
    config = _write_config(tmp_path / "c.yaml", "train: {steps: 10, warmup_steps: 50}\n")
    code = run_cli(cli.main, ["train", "--config", config, "--workdir", str(tmp_path / "run")],
                   prog="edgedet-train")
    err = capsys.readouterr().err
    assert code == 2 and "train.warmup_steps" in err


def test_restore_without_checkpoint_is_a_user_error(tmp_path):
    from app.errors import UserError
    with pytest.raises(UserError, match="no state.json"):
        trainer.restore_model(str(tmp_path))


def test_bad_augmentation_value_exits_2_before_training(tmp_path, capsys):
    config = _write_config(tmp_path / "c.yaml", "train: {distort_color: {enabled: true, color_ordering: 3}}\n")
    workdir = tmp_path / "run"
    code = run_cli(cli.main, ["train", "--config", config, "--workdir", str(workdir)],
                   prog="edgedet-train")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "train.distort_color.color_ordering: expected 0 or 1, got 3" in err[0]
    assert not workdir.exists()
