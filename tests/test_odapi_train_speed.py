"""benchmarks/odapi_train_speed.py: the OD API pipeline it writes and how it times a run.

The timed runs themselves need the OD API venv and minutes of training: they are the
benchmark, not a test. Here: the pipeline.config it hands the OD API imports back
(through edgedet's own import-config) to exactly the model and train sections edgedet
trains with, and the per-step figures come from the progress samples as stated.
"""

import dataclasses
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import odapi_train_speed as bench  # noqa: E402
from training import config as training_config, import_config  # noqa: E402
from training.data import label_map  # noqa: E402

# Keys edgedet has and the OD API pipeline does not carry (logging, checkpoints, eval cadence).
NOT_IN_PIPELINE = {"log_every", "checkpoint_every", "eval_every"}


def _differences(a, b, prefix=""):
    if not dataclasses.is_dataclass(a):
        return [] if a == b else [(prefix, a, b)]
    found = []
    for field in dataclasses.fields(a):
        found += _differences(getattr(a, field.name), getattr(b, field.name), prefix + "." + field.name)
    return found


def test_pipeline_imports_back_to_the_same_model_and_train_sections(tmp_path):
    cfg = bench.float_config(training_config.load_config("config.yaml"), 400)
    (tmp_path / "synth").mkdir()
    label_map.write_label_map(str(tmp_path / "synth" / "label_map.pbtxt"), cfg.model.labels)
    path = tmp_path / "pipeline.config"
    path.write_text(bench.pipeline_config(cfg, str(tmp_path / "synth")))
    imported, _ = import_config.import_pipeline(str(path))
    assert _differences(cfg.model, imported.model) == []
    train = [d for d in _differences(cfg.train, imported.train) if d[0].lstrip(".") not in NOT_IN_PIPELINE]
    assert train == []
    assert imported.train.steps == 400 and not imported.train.quantization.enabled
    assert imported.data.train == str(tmp_path / "synth" / "train.tfrecord")
    assert imported.data.shuffle_buffer == cfg.data.shuffle_buffer
    # edgedet runs on the replicas of the config's whole run (4000 float steps), not of 400 steps.
    from training import cpu_replicas
    assert cfg.distribute.cpu_replicas == str(cpu_replicas.replica_count("auto", 8, cpu_replicas.host_cores(), 4000))


def test_pipeline_refuses_augmentations_it_does_not_write():
    cfg = training_config.load_config("config.yaml")
    cfg = training_config.app_config.replace(cfg, train=training_config.app_config.replace(
        cfg.train, vertical_flip=True))
    with pytest.raises(SystemExit, match="random_vertical_flip"):
        bench.pipeline_config(cfg, "data")


def test_per_step_times_from_step_100_to_the_last_line():
    # (step, wall s, CPU s) at each progress line; step 100 includes the tracing.
    samples = [(100, 50.0, 80.0), (200, 65.0, 96.0), (300, 80.0, 112.0), (400, 95.5, 128.5)]
    wall, cpu = bench.per_step(samples)
    assert wall == pytest.approx(45.5 / 300, rel=1e-9)
    assert cpu == pytest.approx(48.5 / 300, rel=1e-9)
    with pytest.raises(SystemExit, match="too few steps"):
        bench.per_step(samples[:1])


def test_sampled_run_counts_a_line_logged_twice_once(tmp_path):
    # The OD API logs each progress line twice (absl and the tensorflow logger).
    code = ("print('INFO:tensorflow:Step 100 per-step time 0.5s');"
            "print('I1201 model_lib_v2.py:705] Step 100 per-step time 0.5s');"
            "print('INFO:tensorflow:Step 200 per-step time 0.4s')")
    samples = bench.sampled_run([sys.executable, "-c", code], dict(os.environ), bench.ODAPI_LINE,
                                str(tmp_path / "run.log"))
    assert [s[0] for s in samples] == [100, 200]
    assert samples[1][1] >= samples[0][1] and samples[1][2] >= samples[0][2] >= 0.0
    assert (tmp_path / "run.log").read_text().count("per-step time") == 3


def test_sampled_run_failure_names_the_log(tmp_path):
    with pytest.raises(SystemExit, match="run.log"):
        bench.sampled_run([sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ),
                          bench.EDGEDET_LINE, str(tmp_path / "run.log"))


def test_progress_line_patterns():
    assert bench.EDGEDET_LINE.search("step 200/400  loss 1.2345 (cls 1.0") is not None
    assert bench.EDGEDET_LINE.search("step 200  eval mAP 0.5") is None


def test_without_the_odapi_venv_it_skips_cleanly(tmp_path, capsys):
    assert bench.main(["--venv", str(tmp_path / "no-venv"), "--workdir", str(tmp_path / "w")]) == 0
    assert "skipped: no OD API venv at {}".format(tmp_path / "no-venv") in capsys.readouterr().out
    assert not (tmp_path / "w").exists()


def test_trace_ops_are_put_in_their_part_of_the_step():
    import train_speed
    model = "ssd_mobilenet_v2"
    cases = {  # op names as the trace of the fused step writes them
        "while/body/_1/gradient_tape/while/ssd_mobilenet_v2/block_1_expand/Conv2D/Conv2DBackpropFilter":
            ("backbone bwd", "block_1_expand"),
        "while/body/_1/while/ssd_mobilenet_v2/bn_Conv1/FusedBatchNormV3": ("backbone fwd", "bn_Conv1"),
        "while/body/_1/gradient_tape/while/ssd_mobilenet_v2/layer_20_2_Conv2d_3x3_s2_256/Conv2D/Conv2DBackpropInput":
            ("extra layers bwd", "layer_20_2_Conv2d_3x3_s2_256"),
        "while/body/_1/while/ssd_mobilenet_v2/BoxPredictor_0_ClassPredictor/BiasAdd": ("heads fwd",
                                                                                       "BoxPredictor_0_ClassPredictor"),
        "while/body/_1/while/Conv_1/kernel/Regularizer/L2Loss": ("L2 regularization", None),
        "while/body/_1/while/SGD/mul_319": ("optimizer", None),
        "while/body/_1/gradient_tape/while/sub_3": ("loss and the rest bwd", None),
    }
    for name, expected in cases.items():
        assert train_speed.op_part(name, "Op", model) == expected, name
    assert train_speed.op_part("IteratorGetNext", "IteratorGetNext", model) == ("input (GetNext)", None)


def test_per_step_without_progress_lines_says_so():
    with pytest.raises(SystemExit, match="too few steps"):
        bench.per_step([])
