"""`edgedet-train compare`: the configs it ships with, its graph counts, its table and page, end to end.

Everything is real: the TFLite converter for the hand-counted graph, the committed demo bundle's
own report.json and model_int8.tflite for the table, headless Chromium for the page, and (slow)
two tiny configs trained, exported through the fidelity gate and measured by the CLI. There is
no Edge TPU or edgetpu_compiler here, so the Edge TPU columns are the preflight's prediction.
"""

import dataclasses
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT
from training import config as training_config
from training.compare import command, graph, measure, model_run, page, settings
from training.config import app_config

DEMO = ROOT / "models" / "demo"
CHROMIUM = "/usr/bin/chromium"
# configs/<name>.yaml: the model keys each one changes from config.yaml.
SHIPPED = {"ssd_mobilenet_v2": {},
           "ssdlite_mobilenet_v2": {"use_depthwise": True, "box_predictor_kernel_size": 3},
           "ssd_mobiledet": {"feature_extractor": "ssd_mobiledet_edgetpu"},
           "ssdlite_mobiledet": {"feature_extractor": "ssd_mobiledet_edgetpu", "use_depthwise": True,
                                 "box_predictor_kernel_size": 3}}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_configs_are_config_yaml_with_only_their_model_keys_changed(name):
    base = training_config.load_config(str(ROOT / "config.yaml"))
    shipped = training_config.load_config(str(ROOT / "configs" / (name + ".yaml")))
    assert shipped == app_config.replace(base, model=app_config.replace(base.model, **SHIPPED[name]))


def test_shipped_configs_load_as_one_comparison(tmp_path):
    paths = [str(ROOT / "configs" / (n + ".yaml")) for n in SHIPPED]
    models = settings.load_models(paths, str(tmp_path), 1500)
    assert [m.name for m in models] == list(SHIPPED)
    for m in models:
        t = m.cfg.train
        assert (t.steps, t.quantization.delay, t.checkpoint_every, t.eval_every) == (1500, 1200, 1200, 0)
        assert m.cfg.data.train == os.path.join(str(tmp_path), "train.tfrecord")


def _tiny_config(tmp_path, name, **train):
    cfg = training_config.load_config(str(ROOT / "config.yaml"))
    cfg = app_config.replace(cfg, train=app_config.replace(cfg.train, **train))
    path = tmp_path / (name + ".yaml")
    path.write_text(training_config.render_config(cfg))
    return str(path)


def _refused(paths, tmp_path, message):
    from app.errors import UserError
    with pytest.raises(UserError, match=message):
        settings.load_models(paths, str(tmp_path), None)


def test_configs_that_cannot_be_compared_are_refused_naming_the_config(tmp_path):
    Q = training_config.QuantizationConfig
    one = _tiny_config(tmp_path, "a")
    _refused([one], tmp_path, "at least twice")
    (tmp_path / "other").mkdir()
    _refused([one, _tiny_config(tmp_path / "other", "a")], tmp_path, "a second config named 'a'")
    _refused([one, _tiny_config(tmp_path, "b", batch_size=4)], tmp_path, "b.yaml: the train schedule")
    _refused([_tiny_config(tmp_path, "c", quantization=Q(enabled=False)), one], tmp_path,
             "c.yaml: train.quantization: compare needs float then quantization-aware")
    _refused([_tiny_config(tmp_path, "d", quantization=Q(enabled=True, delay=1000)), one], tmp_path,
             "d.yaml: .*under a third of 5000 steps")


def test_graph_counts_match_hand_counts_on_a_converted_model(tmp_path):
    """Conv 3x3 3->8 stride 2 on 16x16, depthwise 3x3 on 8x8x8, dense 8*8*8 -> 5, float TFLite."""
    tf = pytest.importorskip("tensorflow")
    import tf_keras as keras
    inputs = keras.Input((16, 16, 3), batch_size=1)
    # Non-zero biases: the converter stores equal constants once and drops an all-zero dense bias.
    bias = dict(bias_initializer="random_uniform")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", **bias)(inputs)
    x = keras.layers.DepthwiseConv2D(3, padding="same", **bias)(x)
    outputs = keras.layers.Dense(5, **bias)(keras.layers.Flatten()(x))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(inputs, outputs))
    path = tmp_path / "m.tflite"
    path.write_bytes(converter.convert())
    size = graph.model_size(str(path))
    conv, depthwise, dense = 8 * 8 * 8 * (3 * 3 * 3), 8 * 8 * 8 * (3 * 3), 5 * 512
    assert size["multiply_adds"] == conv + depthwise + dense
    assert size["parameters"] == (3 * 3 * 3 * 8 + 8) + (3 * 3 * 8 + 8) + (512 * 5 + 5)
    assert size["parameter_bytes"] == 4 * size["parameters"]  # float32 weights and biases
    assert size["fits_on_chip"] and size["on_chip_fraction"] == pytest.approx(size["parameter_bytes"] / 8388608.0)


@pytest.fixture(scope="module")
def demo_comparison():
    """A two-row compare.json from the committed demo bundle's own report and int8 file."""
    from training.data.records import Example
    with open(str(DEMO / "report.json")) as f:
        report = json.load(f)
    meta = json.loads((DEMO / "model.json").read_text())
    cfg = training_config.load_config(str(ROOT / "config.yaml"))
    sample = (DEMO / "samples" / "0.jpg").read_bytes()
    eval_examples = [Example(sample, "jpeg", 240, 280, np.zeros((0, 4), np.float32), np.zeros(0, np.int32), "0")]
    qat = {"bundle": str(DEMO), "passed": True, "report": report}
    refused = model_run.failure("export error", RuntimeError("a conversion that failed\nsecond line"))
    model = settings.Model("demo", str(ROOT / "config.yaml"), cfg)
    rows = [measure.row(model, cfg, qat, refused, eval_examples, 12.5),
            measure.row(model._replace(name="demo_again"), cfg, refused, qat, eval_examples, None)]
    return command.comparison([model, model], rows, str(ROOT / "data"), 200), report, meta


def test_table_rows_are_the_bundles_own_figures(demo_comparison):
    result, report, meta = demo_comparison
    first, second = result["models"]
    fid = report["fidelity"]
    assert first["qat"]["passed"] is True and first["qat"]["int8"]["map"] == fid["int8"]["map"]
    assert first["qat"]["float"]["map50"] == fid["float"]["map50"] and first["qat"]["ratio"] == fid["ratio"]
    assert first["ptq"] == {"passed": False, "rejected_by": "export error",
                            "reasons": ["RuntimeError: a conversion that failed"]}
    x = first["int8"]
    assert x["tflite_bytes"] == os.path.getsize(str(DEMO / "model_int8.tflite"))
    pre = meta["edgetpu"]["preflight"]
    assert (x["preflight"]["ops_on_tpu"], x["preflight"]["ops_on_cpu"]) == (pre["ops_on_tpu"], pre["ops_on_cpu"])
    # 192x224 MobileNetV2 at depth 0.5 with SSD heads: about 1.2 M parameters and 0.1 G multiply-adds.
    assert 0.8e6 < x["size"]["parameters"] < 2e6 and 50e6 < x["size"]["multiply_adds"] < 200e6
    assert x["size"]["parameter_bytes"] < 1.2 * x["size"]["parameters"]  # int8 weights, few int32 biases
    assert 0.0 < x["cpu_latency_ms"] < 1000.0 and math.isfinite(x["cpu_latency_ms"])
    # The second row measured the post-training bundle, as the QAT export failed.
    assert second["int8"]["model"].endswith("model_int8.tflite") and second["ptq"]["passed"] is True
    json.dumps(result, allow_nan=False)


def test_class_mean_precision_averages_only_defined_classes():
    curve = {"recall": [0.0, 0.5, 1.0], "precision": [[1.0, 0.5, -1.0], [0.8, -1.0, -1.0]]}
    assert page.class_mean_precision(curve) == [(0.0, pytest.approx(0.9)), (0.5, 0.5)]


@pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="no /usr/bin/chromium")
def test_page_in_headless_chromium_shows_the_table_and_the_curves(demo_comparison, tmp_path):
    import cv2
    result, report, _ = demo_comparison
    command.write_outputs(str(tmp_path), result)
    assert sorted(os.listdir(str(tmp_path))) == ["compare.html", "compare.json"]  # no temp file left
    text = (tmp_path / "compare.html").read_text()
    assert "{:.4f}".format(report["fidelity"]["int8"]["map"]) in text and "REJECTED (export error)" in text
    assert text.count("<polyline") == 2  # float and int8 of the one row with a QAT measurement
    png = tmp_path / "page.png"
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           "--disable-background-networking", "--disable-component-update", "--disable-sync",
                           "--user-data-dir={}".format(tmp_path / "profile"), "--screenshot={}".format(png),
                           "--window-size=1280,1600", (tmp_path / "compare.html").as_uri()],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    if os.environ.get("EDGEDET_SCREENSHOT"):  # keep the picture for a human
        shutil.copy(str(png), os.environ["EDGEDET_SCREENSHOT"])
    shot = cv2.imread(str(png))
    assert shot is not None and shot.shape[:2] == (1600, 1280)
    blue = (shot[..., 0] > 150) & (shot[..., 2] < 80) & (shot[..., 1] > 90)  # #1f77b4, the first model's curves
    assert blue.sum() > 300
    assert (shot.max(axis=2) < 100).sum() > 5000  # the tables' text


@pytest.mark.slow  # two tiny models trained, four exports through the gate, the doctor on rejected ones: minutes
def test_tiny_compare_end_to_end_writes_real_consistent_numbers_and_resumes(tmp_path):
    from training.data.synth import write_synthetic_set
    data = tmp_path / "data"
    write_synthetic_set(str(data), 16, 100, 72, 80, seed=1)
    base = training_config.load_config(str(ROOT / "config.yaml"))
    paths = []
    for name, keys in (("ssd", {}), ("ssdlite_mobiledet", SHIPPED["ssdlite_mobiledet"])):
        model = dataclasses.replace(base.model, input_height=64, input_width=64, depth_multiplier=0.35, **keys)
        cfg = dataclasses.replace(base, model=model, train=dataclasses.replace(base.train, batch_size=4, log_every=2))
        paths.append(tmp_path / (name + ".yaml"))
        paths[-1].write_text(training_config.render_config(cfg))
    argv = [sys.executable, "-m", "training", "compare", "--config", str(paths[0]), "--config", str(paths[1]),
            "--data", str(data), "--workdir", str(tmp_path / "w"), "--steps", "6"]
    proc = subprocess.run(argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compare [1/2] ssd: training and exporting" in proc.stdout and "step 6/6" in proc.stdout
    result = json.loads((tmp_path / "w" / "compare.json").read_text())
    assert [m["name"] for m in result["models"]] == ["ssd", "ssdlite_mobiledet"]
    assert (result["steps"], result["quantization_delay"], result["eval_images"]) == (6, 5, 100)
    for m in result["models"]:
        for kind in ("qat", "ptq"):
            entry = m[kind]
            with open(os.path.join(entry["bundle"], "report.json")) as f:
                report = json.load(f)
            if "fidelity" in report:  # six steps learn little: the gate may refuse, but it measured
                for key in ("map", "map50"):
                    assert 0.0 <= entry["int8"][key] <= 1.0 and entry["int8"][key] == report["fidelity"]["int8"][key]
                assert 0.0 <= entry["agreement"] <= 1.0 and entry["passed"] == report["fidelity"]["passed"]
            else:
                assert entry["rejected_by"] == report["rejected_by"] and not entry["passed"]
        x = m["int8"]
        assert x["preflight"]["ops_on_cpu"] == 0 and x["preflight"]["ops_on_tpu"] > 50
        assert 1e5 < x["size"]["parameters"] < 2e6 and 1e6 < x["size"]["multiply_adds"] < 1e8
        assert 0.0 < x["cpu_latency_ms"] < 1000.0 and m["train_seconds"] > 0
    lite = result["models"][1]["architecture"]
    assert lite["feature_extractor"] == "ssd_mobiledet_edgetpu" and lite["use_depthwise"] is True
    again = subprocess.run(argv, cwd=str(ROOT), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=600)
    assert again.returncode == 0 and again.stdout.count("done before, kept") == 2, again.stderr[-2000:]
    assert json.loads((tmp_path / "w" / "compare.json").read_text())["models"] == result["models"]
