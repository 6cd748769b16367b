"""SSDLite-MobileNetV2 and SSDLite-MobileDet-EdgeTPU go the whole way: QAT, int8, Edge TPU preflight, app.

Everything is real: tfmot quantize_model, the TFLite converter, training.export's fidelity gate,
the Edge TPU preflight (there is no Edge TPU or edgetpu_compiler here, so the preflight's
prediction is what is checked) and `python -m app` as a subprocess on the ai_edge_litert CPU
interpreter.
  * default: per architecture, the quantization-aware network converts to a full-integer model
    whose every op the preflight puts on the Edge TPU;
  * slow: per architecture, float then quantization-aware training for a few steps, export
    through the fidelity gate, and the app running the exported int8 model.
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from conftest import ROOT  # noqa: E402
from export_support import synthetic_examples  # noqa: E402
from training import convert_tflite, evaluate, train as trainer  # noqa: E402
from training.config import app_config, load_config  # noqa: E402
from training.edgetpu.preflight import preflight  # noqa: E402

replace = app_config.replace
SIZE = 64
ARCHITECTURES = ("ssd_mobilenet_v2_keras", "ssd_mobiledet_edgetpu")


def _ssdlite_cfg(extractor, steps=4, delay=2):
    cfg = load_config()
    model = replace(cfg.model, input_height=SIZE, input_width=SIZE, depth_multiplier=0.35,
                    feature_extractor=extractor, use_depthwise=True, box_predictor_kernel_size=3)
    train = replace(cfg.train, steps=steps, batch_size=4, warmup_steps=1, log_every=1,
                    checkpoint_every=steps, eval_every=0,
                    quantization=replace(cfg.train.quantization, delay=delay))
    return replace(cfg, model=model, train=train)


def _assert_all_on_edgetpu(int8_path):
    report = preflight(int8_path)
    assert report["ops_total"] > 50
    assert (report["ops_on_tpu"], report["ops_on_cpu"], report["subgraphs"]) == (report["ops_total"], 0, 1)
    assert report["problems"] == []
    return report


@pytest.mark.parametrize("extractor", ARCHITECTURES)
def test_quantization_aware_ssdlite_is_full_integer_and_all_edgetpu(extractor, tmp_path):
    from training.model import build_ssd
    cfg = _ssdlite_cfg(extractor)
    qat = trainer.quantize(build_ssd(cfg.model))
    wrapped = [l for l in qat.layers if type(l).__name__ == "QuantizeWrapperV2"]
    assert any(l.layer.__class__.__name__ == "DepthwiseConv2D" for l in wrapped)
    images = [evaluate.decode_image(e) for e in synthetic_examples(8, SIZE, SIZE)]
    # One training-mode pass sets the fake-quant ranges, as the first QAT step does.
    batch = np.concatenate([x for x, in convert_tflite.calibration_inputs(images, SIZE, SIZE)()])
    qat(batch, training=True)
    sm = str(tmp_path / "qat_saved_model")
    convert_tflite.save_batch1_savedmodel(qat, SIZE, SIZE, sm)
    int8 = convert_tflite.to_int8_tflite(sm, convert_tflite.calibration_inputs(images, SIZE, SIZE))
    convert_tflite.check_full_integer(int8)  # uint8 in/out, (2/255, 128) input, no float op
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(int8)
    counts = _assert_all_on_edgetpu(str(path))["op_counts"]
    assert counts["DEPTHWISE_CONV_2D"]["tpu"] >= 12 + 4  # 6 box + 6 class heads, 4 extra layers


def _decoded(examples):
    from training.data import dataset as data_io
    return data_io.decoded_dataset(examples)


def _run_app(bundle, frames=3):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    proc = subprocess.run(
        [sys.executable, "-m", "app", "run", "--model", bundle, "--source", "synthetic:160x120@0",
         "--max-frames", str(frames), "--events", "-", "--threads", "1", "--headless",
         "--precision", "int8"],
        cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        universal_newlines=True, timeout=300)
    return proc.returncode, [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


@pytest.mark.slow  # per architecture: 4 train steps, QAT and float conversions, a gate run: minutes
@pytest.mark.parametrize("extractor", ARCHITECTURES)
def test_train_float_then_qat_export_and_run_in_the_app(extractor, tmp_path):
    from training import export
    cfg = _ssdlite_cfg(extractor)
    workdir = str(tmp_path / "run")
    trainer.train(cfg, workdir, _decoded(synthetic_examples(16, SIZE, SIZE)), out=open(os.devnull, "w"))
    model, trained_cfg, state = trainer.restore_model(workdir)
    assert state["phase"] == "qat" and state["step"] == 4
    assert trained_cfg.model == cfg.model
    lines = []
    code, where = export.export_bundle(model, trained_cfg, state, synthetic_examples(100, SIZE, SIZE, seed=5),
                                       str(tmp_path / "bundle"), log=lines.append)
    # Four steps learn nothing, so the gate may refuse the pair; either way it measured it.
    assert code in (0, 1) and os.path.isfile(os.path.join(where, "model.json")), lines
    with open(os.path.join(where, "model.json")) as f:
        meta = json.load(f)
    fid = meta["fidelity"]
    for key in ("map", "map50"):
        assert 0.0 <= fid["float"][key] <= 1.0 and 0.0 <= fid["int8"][key] <= 1.0
    assert 0.0 <= fid["agreement"] <= 1.0 and fid["passed"] == (code == 0)
    assert meta["training"]["quantization_aware"] is True
    assert meta["num_anchors"] == model.outputs[0].shape[1]
    _assert_all_on_edgetpu(os.path.join(where, "model_int8.tflite"))
    assert meta["edgetpu"]["preflight"]["ops_on_cpu"] == 0
    code, events, stderr = _run_app(where)
    assert code == 0, stderr
    frames = [e for e in events if e.get("type") == "detections"]
    assert len(frames) == 3 and all(e["model"] == "int8" for e in frames)
    assert all(math.isfinite(d["score"]) for e in frames for d in e["detections"])
