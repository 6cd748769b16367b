"""`edgedet-train finetune` on the real OD API checkpoint import, and the export's calibration rule.

The default tests fine-tune the fixture's imported workdir for two steps (real tfmot QAT on the
real weights) and check what the run did: quantization-aware from the first step, at the
fine-tuning rate, batch norm kept, the segment in state.json. The slow test runs the whole path
of the README (import -> fine-tune -> export through the gate) and asserts the int8 mAP it reaches.
"""

import json
import subprocess
import sys

import numpy as np
import pytest

from app.errors import UserError, run_cli
from training import export, schedule
from training.cli import main

from conftest import FIXTURES, ROOT

ODAPI = FIXTURES / "odapi"
PIPELINE = ODAPI / "pipeline.config"
CHECKPOINT = ODAPI / "checkpoint"
IMPORTED_STEP = 3000  # the OD API's step in the fixture's checkpoint


def _cli(argv, capsys):
    code = run_cli(main, [str(a) for a in argv], prog="edgedet-train")
    out = capsys.readouterr()
    return code, out.out, out.err


def _import(workdir):
    if not PIPELINE.exists():
        pytest.skip("../shared/fixtures/odapi is not laid out beside the project")
    assert run_cli(main, ["import-checkpoint", "--pipeline", str(PIPELINE), "--checkpoint", str(CHECKPOINT),
                          "--workdir", str(workdir)], prog="edgedet-train") == 0


def _set_keys(workdir, eval_images=0, **train_keys):
    """Edits the workdir's config.yaml the way a user would (train keys, eval.max_images)."""
    from app.config import replace
    from training import workdir as run_dir
    cfg = run_dir.read_config(str(workdir))
    run_dir.write_config(str(workdir), replace(cfg, train=replace(cfg.train, **train_keys),
                                               eval=replace(cfg.eval, max_images=eval_images)))


def _sorted_values(workdir, step, name):
    """Every value of the checkpoint's model variables called `name` (moving_mean, kernel), sorted:
    comparable between the float and the quantization-aware checkpoint, whose keys differ."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(str(workdir / "checkpoints" / "ckpt-{}".format(step)))
    keys = [k for k in reader.get_variable_to_shape_map() if k.startswith("model/")
            and k.endswith("/{}/.ATTRIBUTES/VARIABLE_VALUE".format(name))]
    assert keys
    return np.sort(np.concatenate([reader.get_tensor(k).ravel() for k in keys]))


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(workdir, stdout) after `python -m training finetune --steps 2`, logging and checkpointing
    every step (the final eval on 4 images, to keep it cheap)."""
    workdir = tmp_path_factory.mktemp("finetune") / "run"
    _import(workdir)
    _set_keys(workdir, eval_images=4, log_every=1, checkpoint_every=1, fine_tune_warmup_steps=1)
    run = subprocess.run([sys.executable, "-m", "training", "finetune", "--workdir", str(workdir), "--steps", "2",
                          "--learning-rate", "0.0005"], cwd=str(ROOT), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True)
    assert run.returncode == 0, run.stderr[-2000:]
    return workdir, run.stdout


def test_the_first_step_is_quantization_aware_at_the_fine_tuning_rate(tuned):
    _, out = tuned
    assert "finetune: 2 steps from step 3000" in out and "batch norm frozen" in out
    steps = [line for line in out.splitlines() if line.startswith("step ") and "/" in line.split()[1]]
    assert [line.split()[1] for line in steps] == ["3001/3002", "3002/3002"]  # no float phase restarted
    for line in steps:
        assert " lr 0.00050 " in line and line.endswith(" qat")


def test_the_run_ends_quantization_aware_where_asked(tuned):
    from training import workdir as run_dir
    workdir, _ = tuned
    state = json.loads((workdir / "state.json").read_text())
    assert state["phase"] == "qat" and state["quantization_aware"] and state["step"] == IMPORTED_STEP + 2
    assert (workdir / "checkpoints" / "ckpt-3001.index").exists()  # checkpoint_every 1
    cfg = run_dir.read_config(str(workdir))
    assert cfg.train.steps == IMPORTED_STEP + 2
    assert cfg.train.quantization.enabled and cfg.train.quantization.delay == IMPORTED_STEP


def test_state_json_records_the_segment_and_the_import(tuned):
    workdir, _ = tuned
    state = json.loads((workdir / "state.json").read_text())
    assert state["fine_tune"] == {"from_step": IMPORTED_STEP, "steps": 2, "learning_rate": 0.0005,
                                  "warmup_steps": 1, "freeze_batchnorm": True}
    assert state["imported_from"].endswith("ckpt-4")


def test_weights_moved_and_batch_norm_stayed(tuned):
    workdir, _ = tuned
    end = IMPORTED_STEP + 2
    # Frozen: the OD API's statistics, bit for bit.
    np.testing.assert_array_equal(_sorted_values(workdir, end, "moving_mean"),
                                  _sorted_values(workdir, IMPORTED_STEP, "moving_mean"))
    moved = np.abs(_sorted_values(workdir, end, "kernel") - _sorted_values(workdir, IMPORTED_STEP, "kernel"))
    assert moved.max() > 1e-6  # two steps at 5e-4 moved the weights


def test_calibrated_ranges_are_the_mean_batch_ranges():
    """A quantized 1x1 identity conv: its output range after calibrate is the mean of the batches'."""
    import tensorflow as tf
    import tf_keras as keras
    from training import qat_ranges, train
    inputs = keras.Input((4, 4, 1))
    conv = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros")
    model = train.quantize(keras.Model(inputs, conv(inputs)))
    first = np.linspace(-1.0, 2.0, 16, dtype=np.float32).reshape(1, 4, 4, 1)
    second = np.linspace(-3.0, 4.0, 16, dtype=np.float32).reshape(1, 4, 4, 1)
    assert qat_ranges.calibrate(model, [tf.constant(first), tf.constant(second)]) == 2
    low, high = (float(v.numpy()) for v in qat_ranges.moving_average_ranges(model))
    # The input is fake-quantized on its own range first (steps of 12/255), hence the tolerance.
    assert low == pytest.approx(-2.0, abs=0.03) and high == pytest.approx(3.0, abs=0.03)


def test_fine_tune_schedule_by_hand():
    lr = schedule.FineTune(start_step=3000, learning_rate=0.001, warmup_steps=50, total_steps=4000)
    got = [float(lr(s)) for s in (3000, 3024, 3049, 3050, 3999, 4000)]
    np.testing.assert_allclose(got, [0.001 / 50, 0.001 * 25 / 50, 0.001, 0.001, 0.001, 0.0], rtol=1e-6)


def test_a_resumed_fine_tune_keeps_its_schedule():
    """`train --resume` of an interrupted fine-tuning run: the state's segment, not the config's cosine."""
    from training.config import TrainConfig
    t = TrainConfig(steps=4000)
    state = {"step": 3200, "phase": "qat", "fine_tune": {"from_step": 3000, "steps": 1000, "learning_rate": 0.002,
                                                         "warmup_steps": 0, "freeze_batchnorm": True}}
    assert float(schedule.for_run(t, state)(3500)) == pytest.approx(0.002)
    assert float(schedule.for_run(t, {"step": 3200, "phase": "qat"})(3500)) == pytest.approx(
        float(schedule.from_config(t)(3500)))


def test_finetune_without_a_run_exits_2(tmp_path, capsys):
    code, _, err = _cli(["finetune", "--workdir", tmp_path, "--steps", "5"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "no state.json (no checkpoint to fine-tune)" in err and "import-checkpoint" in err


# ----------------------------------------------------------------------------- the export's rule


def test_calibration_takes_training_images_only_when_the_eval_split_is_small():
    loads = []

    def load_train():
        loads.append(1)
        return ["train"] * 300

    assert export.calibration_set(["eval"] * 100, load_train) == (["eval"] * 100, "eval") and not loads
    assert export.calibration_set(["eval"] * 60, load_train) == (["train"] * 300, "train") and loads == [1]


def test_the_gate_needs_its_eval_images_and_says_so():
    with pytest.raises(UserError) as e:
        export._check_gate_images([None] * (export.MIN_GATE_IMAGES - 1))
    assert "needs >= 50 eval images; the eval split has 49" in str(e.value)
    export._check_gate_images([None] * export.MIN_GATE_IMAGES)
    with pytest.raises(UserError) as e:
        export._calibration_images([None] * 60, "train", 200)
    assert "needs >= 100 images; export.calibration_images is 200 and the train split has 60" in str(e.value)


@pytest.mark.slow
def test_import_finetune_export_passes_the_gate(tmp_path, capsys):
    """The README's path on the fixture: int8 mAP against the OD API's own float mAP 0.8022."""
    workdir, out = tmp_path / "run", tmp_path / "bundle"
    _import(workdir)
    code, _, _ = _cli(["finetune", "--workdir", workdir, "--steps", "300"], capsys)
    assert code == 0
    code, log, _ = _cli(["export", "--config", workdir / "config.yaml", "--workdir", workdir, "--out", out],
                        capsys)
    assert code == 0, log
    assert "calibrating on 200 train images; the gate measures on 60 eval images" in log
    meta = json.loads((out / "model.json").read_text())
    fid = meta["fidelity"]
    assert fid["passed"] and fid["num_images"] == 60
    assert fid["calibration"] == {"split": "train", "num_images": 200}
    assert meta["training"]["quantization_aware"] and meta["training"]["steps"] == IMPORTED_STEP + 300
    print("fine-tuned int8 mAP {:.4f} (float twin {:.4f})".format(fid["int8"]["map"], fid["float"]["map"]))
    # The goal: 0.99 x the OD API's 0.8022. Measured: 0.7957 (float twin 0.7985) through the CLI and
    # 0.7992 (0.7981) in this test; post-training (convert-savedmodel) gave 0.788.
    assert fid["int8"]["map"] >= 0.794
