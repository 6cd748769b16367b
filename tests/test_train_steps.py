"""`edgedet-train train --steps N`: the config's schedule, scaled to N steps (warmup, cosine decay,
quantization delay), with one line saying what it became."""

import io
import json
import os

import pytest

tf = pytest.importorskip("tensorflow")

from app.errors import UserError, run_cli  # noqa: E402
from conftest import ROOT, SHARED  # noqa: E402
from training import cli, schedule, train as trainer  # noqa: E402
from training.config import load_config  # noqa: E402


def _overridden(cfg, steps):
    out = io.StringIO()
    return trainer.config_with_overrides(cfg, steps=steps, out=out).train, out.getvalue()


def test_default_config_at_20_steps_keeps_its_schedule():
    t, note = _overridden(load_config(str(ROOT / "config.yaml")), 20)
    # 5000 steps, warmup 300, QAT from 4000 -> factor 0.004: warmup 1.2 -> 1, delay 16.
    assert (t.steps, t.warmup_steps, t.quantization.delay) == (20, 1, 16)
    assert note.strip() == ("train: --steps 20 rescales the config's 5000-step schedule by 0.004: "
                            "warmup_steps 300 -> 1, quantization.delay 4000 -> 16")


def test_seed_config_at_200_steps():
    seed = ROOT / "configs" / "seed.yaml"
    t, _ = _overridden(load_config(str(seed)), 200)
    # 40000 steps, warmup 1000, QAT from 1000 -> factor 0.005.
    assert (t.steps, t.warmup_steps, t.quantization.delay) == (200, 5, 5)
    schedule.from_config(t)  # consistent: no UserError


def test_scaled_steps_stay_below_the_new_total_and_float_only_stays_float_only():
    cfg = load_config(str(ROOT / "config.yaml"))
    t, _ = _overridden(cfg, 2)
    assert (t.warmup_steps, t.quantization.delay) == (0, 1)  # 0.12 -> 0, 1.6 -> 2 -> kept below 2
    float_only = trainer.training_config.app_config.replace(
        cfg.train, quantization=trainer.training_config.app_config.replace(cfg.train.quantization, delay=5000))
    t, _ = schedule.rescaled(float_only, 100)
    assert t.quantization.delay == 100  # QAT never starts, as in the config


def test_same_steps_change_nothing_and_say_nothing():
    cfg = load_config(str(ROOT / "config.yaml"))
    t, note = _overridden(cfg, cfg.train.steps)
    assert t == cfg.train and note == ""


def test_inconsistent_config_without_steps_is_still_an_error_naming_the_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("train: {steps: 20, warmup_steps: 300}\n")
    with pytest.raises(UserError, match=r"train\.warmup_steps: expected >= 0 and < train\.steps \(20\)"):
        trainer.config_with_overrides(load_config(str(config)))


def test_resume_moves_only_the_end_of_the_schedule():
    # A resumed run (e.g. fine-tuning an imported checkpoint) keeps its warmup and QAT start.
    cfg = load_config(str(ROOT / "config.yaml"))
    out = io.StringIO()
    t = trainer.config_with_overrides(cfg, steps=6000, out=out, resume=True).train
    assert (t.steps, t.warmup_steps, t.quantization.delay) == (6000, 300, 4000) and out.getvalue() == ""


@pytest.mark.parametrize("steps", [0, -3])
def test_meaningless_steps_are_refused(steps):
    with pytest.raises(UserError, match="--steps: expected >= 1, got {}".format(steps)):
        trainer.config_with_overrides(load_config(str(ROOT / "config.yaml")), steps=steps)


# The default 192x224 model through a float and a QAT trace: about 35 s on 2 cores.
def test_cli_steps_20_on_the_default_config_crosses_the_qat_boundary(tmp_path, capsys):
    from training.data.synth import write_synthetic_set
    data = tmp_path / "data"
    write_synthetic_set(str(data), 16, 4, 240, 280, seed=1)
    workdir = tmp_path / "run"
    code = run_cli(cli.main, ["train", "--config", str(ROOT / "config.yaml"), "--workdir", str(workdir),
                              "--data", str(data), "--steps", "20"], prog="edgedet-train")
    out = capsys.readouterr().out
    assert code == 0, out
    assert "quantization.delay 4000 -> 16" in out
    state = json.loads((workdir / "state.json").read_text())
    assert state["step"] == 20 and state["phase"] == "qat" and state["quantization_aware"]
    assert os.path.exists(str(workdir / "checkpoints" / (state["checkpoint"] + ".index")))
