"""training.cpu_replicas: how many CPU replicas a batch is split over, its config errors, and the
strategy it makes before and after TensorFlow has started (a fresh interpreter each, since
logical devices can only be made before TensorFlow starts)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("tensorflow")

from app.errors import UserError  # noqa: E402
from training import cpu_replicas  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize("batch,cores,expected", [
    (8, 2, 2), (8, 1, 1), (8, 8, 2), (6, 2, 1), (12, 8, 3), (16, 4, 4), (2, 2, 1), (7, 4, 1)])
def test_auto_is_the_most_replicas_of_at_least_4_images_up_to_one_per_core(batch, cores, expected):
    assert cpu_replicas.replica_count("auto", batch, cores, 4000) == expected


def test_auto_leaves_short_runs_on_one_device():
    assert cpu_replicas.replica_count("auto", 8, 2, cpu_replicas.MIN_SPLIT_STEPS) == 2
    assert cpu_replicas.replica_count("auto", 8, 2, cpu_replicas.MIN_SPLIT_STEPS - 1) == 1


def test_a_count_is_taken_as_it_is():
    assert cpu_replicas.replica_count("3", 12, 1, 10) == 3


def test_float_steps_count_from_the_start_step():
    from training.config import load_config
    train = load_config().train  # 5000 steps, quantization-aware from 4000
    assert cpu_replicas.float_steps(train, 1500) == 2500
    assert cpu_replicas.float_steps(train, 4500) == 0  # resumed (or fine-tuned) quantization-aware


def test_float_steps_end_at_the_quantization_delay():
    from training.config import app_config, load_config
    train = load_config().train  # 5000 steps, quantization-aware from 4000
    assert cpu_replicas.float_steps(train) == 4000
    assert cpu_replicas.float_steps(app_config.replace(train, steps=3000)) == 3000
    off = app_config.replace(train.quantization, enabled=False)
    assert cpu_replicas.float_steps(app_config.replace(train, quantization=off)) == 5000


@pytest.mark.parametrize("setting,message", [
    ("0", "expected auto or a whole number >= 1, got '0'"),
    ("two", "expected auto or a whole number >= 1, got 'two'"),
    ("-2", "expected auto or a whole number >= 1, got '-2'"),
    ("3", "3 replicas cannot split train.batch_size 8 evenly"),
])
def test_bad_settings_name_the_key(setting, message):
    with pytest.raises(UserError, match="config: distribute.cpu_replicas: " + message):
        cpu_replicas.check_setting(setting, 8)


@pytest.mark.parametrize("setting", ["auto", "1", "2", "8"])
def test_good_settings_pass(setting):
    cpu_replicas.check_setting(setting, 8)


SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf
    from training import cpu_replicas
    from training.config import load_config
    if sys.argv[1] == "started":
        tf.constant(1.0) + 1.0  # TensorFlow starts with its one CPU device
    strategy = cpu_replicas.strategy("2", load_config().train)
    ranges = None
    if strategy:  # a fine-tuning run's range calibration on the replicas (as test_finetune's, on one device)
        import numpy as np
        import tf_keras as keras
        from training import qat_ranges, train
        with strategy.scope():
            inputs = keras.Input((4, 4, 1))
            conv = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer="zeros")
            model = train.quantize(keras.Model(inputs, conv(inputs)))
        batches = [tf.constant(np.linspace(low, high, 16, dtype=np.float32).reshape(1, 4, 4, 1))
                   for low, high in ((-1.0, 2.0), (-3.0, 4.0))]
        qat_ranges.calibrate(model, batches, strategy)
        ranges = [float(v.numpy()) for v in qat_ranges.moving_average_ranges(model)]
    print(json.dumps({
        "ranges": ranges,
        "replicas": strategy.num_replicas_in_sync if strategy else None,
        "devices": list(strategy.extended.worker_devices) if strategy else [],
        "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
        "cores": cpu_replicas.host_cores()}))
""")


def _run(when):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, when], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_before_tensorflow_starts_two_replicas_share_the_cores():
    result = _run("fresh")
    assert result["replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in result["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert result["intra_op_threads"] == max(1, result["cores"] // 2)
    # Every replica saw each batch and the range updates were all-reduced: the one-device result.
    low, high = result["ranges"]
    assert low == pytest.approx(-2.0, abs=0.03) and high == pytest.approx(3.0, abs=0.03)


def test_after_tensorflow_started_one_device_means_no_split():
    result = _run("started")
    assert result["replicas"] is None and result["intra_op_threads"] == 0  # TF's own default


def test_train_with_replicas_that_do_not_split_the_batch_exits_2_with_one_line(tmp_path, capsys):
    from app.errors import run_cli
    from training import cli
    config = tmp_path / "c.yaml"
    config.write_text("distribute:\n  cpu_replicas: 3\n")  # the default batch is 8
    workdir = tmp_path / "run"
    code = run_cli(cli.main, ["train", "--config", str(config), "--workdir", str(workdir)], prog="edgedet-train")
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0].startswith("edgedet-train: error: config: distribute.cpu_replicas: 3 replicas cannot split")
    assert not workdir.exists()
