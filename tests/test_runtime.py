"""app.inference.runtime / app.inference.devices: runtime choice, Edge TPU fallback, CPU twin, bad models.

Runs on the CPU with the real ai_edge_litert interpreter and the real compiled Coral
pair. This machine has no libedgetpu, so the delegate really fails ("library missing");
the one test that needs a working TPU mocks it and says so.
"""

import json
import os
import shutil

import numpy as np
import pytest

from app.inference import devices, runtime
from app.model.bundle import load_bundle
from app.errors import UserError
from conftest import CORAL
from tiny_bundle import tiny_bundle  # noqa: F401

QUANT = str(CORAL / "mobilenet_v1_0.25_128_quant.tflite")
COMPILED = str(CORAL / "mobilenet_v1_0.25_128_quant_edgetpu.tflite")


@pytest.mark.parametrize("device", ["", "usb", "usb:0", "usb:12", "pci", "pci:1", ":0", ":3"])
def test_valid_device_strings(device):
    assert runtime.check_device(device) == device


@pytest.mark.parametrize("device", ["USB", "usb0", "usb:", "pci:x", "0", "gpu:0", ":", "usb:0:1"])
def test_invalid_device_strings_are_user_errors(device):
    with pytest.raises(UserError, match="expected usb, usb:N"):
        runtime.check_device(device)


@pytest.mark.parametrize("text,cls", [
    ("libedgetpu.so.1: cannot open shared object file: No such file or directory", "library missing"),
    ("libedgetpu.so.1: undefined symbol: TfLiteIntArrayCreate", "ABI mismatch"),
    ("/lib/libstdc++.so.6: version `GLIBCXX_3.4.29' not found", "ABI mismatch"),
    ("Failed to open device: LIBUSB_ERROR_ACCESS", "permissions"),
    ("open /dev/apex_0: Permission denied", "permissions"),
    ("Failed to load delegate from libedgetpu.so.1", "no device"),
])
def test_delegate_failures_are_classified(text, cls):
    assert runtime.classify_delegate_error(text) == cls
    assert runtime.delegate_fix(cls)


def test_genuine_pycoral_detection_never_accepts_a_plain_pycoral_package(tmp_path, monkeypatch):
    # A PyPI-style impostor: a `pycoral` package without utils.edgetpu.
    (tmp_path / "pycoral").mkdir()
    (tmp_path / "pycoral" / "__init__.py").write_text("")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert runtime.genuine_pycoral() is None
    assert [r.name for r in runtime.available_runtimes()] == ["ai_edge_litert"]


def test_compiled_model_is_detected_and_runs_its_cpu_twin():
    assert runtime.is_compiled(COMPILED) and not runtime.is_compiled(QUANT)
    engine = runtime.make_cpu_engine(COMPILED, num_threads=1)
    assert engine.model_path == QUANT and engine.kind == "cpu"
    # Same classifier output as opening the twin directly.
    direct = runtime.make_cpu_engine(QUANT, num_threads=1).interpreter
    image = np.random.RandomState(0).randint(0, 256, (1, 128, 128, 3)).astype(np.uint8)
    outs = []
    for interp in (engine.interpreter, direct):
        interp.set_tensor(interp.get_input_details()[0]["index"], image)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).copy())
    assert outs[0].shape == (1, 1001)
    np.testing.assert_array_equal(outs[0], outs[1])


def test_compiled_model_without_twin_is_a_user_error(tmp_path):
    lone = tmp_path / "lonely_edgetpu.tflite"
    shutil.copy(COMPILED, str(lone))
    with pytest.raises(UserError, match="no CPU twin"):
        runtime.make_cpu_engine(str(lone))


def test_auto_falls_back_to_cpu_with_the_failure_class(caplog):
    engine = runtime.open_engine(COMPILED, "auto", "usb", num_threads=1)
    assert engine.kind == "cpu" and engine.failure == "library missing" and engine.model_path == QUANT
    warning = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"][0]
    assert "Edge TPU not used (library missing" in warning
    assert "library missing" in runtime.describe(engine) and "scale 0.0078125 zero point 128" in runtime.describe(engine)


def test_runtime_edgetpu_without_a_tpu_is_a_user_error():
    with pytest.raises(UserError, match=r"--runtime edgetpu: .*\[library missing\]"):
        runtime.open_engine(COMPILED, "edgetpu")


@pytest.mark.parametrize("make", ["missing", "empty", "truncated", "garbage", "unknown_op"])
def test_bad_model_files_are_user_errors(tmp_path, make):
    path = str(tmp_path / "model.tflite")
    if make == "empty":
        open(path, "wb").close()
    elif make == "truncated":
        with open(QUANT, "rb") as f:
            data = f.read()
        with open(path, "wb") as f:
            f.write(data[:len(data) // 3])
    elif make == "garbage":
        with open(path, "wb") as f:
            f.write(b"\x00" * 4 + b"NOPE" + os.urandom(100))
    elif make == "unknown_op":
        path = str(CORAL / "model_invoking_error.tflite")
    with pytest.raises(UserError) as info:
        runtime.make_cpu_engine(path)
    assert path in str(info.value) and "\n" not in str(info.value)


def test_num_threads_zero_leaves_a_core_for_capture_and_output(monkeypatch):
    for cores, auto in ((None, 1), (1, 1), (2, 1), (4, 3), (8, 7)):
        monkeypatch.setattr(runtime.os, "cpu_count", lambda cores=cores: cores)
        assert runtime.cpu_threads(0) == auto
    monkeypatch.undo()
    assert runtime.cpu_threads(3) == 3
    with pytest.raises(UserError):
        runtime.cpu_threads(-1)


def test_bundle_precision_choice(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    engine, key = runtime.open_bundle_engine(bundle, "auto", "auto", num_threads=1)
    assert key == "int8" and engine.model_path.endswith("model_int8.tflite")
    engine, key = runtime.open_bundle_engine(bundle, "auto", "float", num_threads=1)
    assert key == "float" and runtime.input_quantization(engine.interpreter)[0] == "float32"
    with pytest.raises(UserError, match="no model_int8_edgetpu"):
        runtime.open_bundle_engine(bundle, "edgetpu", "auto")
    with pytest.raises(UserError, match="CPU only"):
        runtime.open_bundle_engine(bundle, "edgetpu", "float")


def _bundle_with_compiled(tiny_bundle, folder):  # noqa: F811
    shutil.copytree(tiny_bundle, folder)
    meta = json.load(open(os.path.join(folder, "model.json")))
    shutil.copy(os.path.join(folder, "model_int8.tflite"), os.path.join(folder, "model_int8_edgetpu.tflite"))
    meta["models"]["edgetpu"] = dict(meta["models"]["int8"], file="model_int8_edgetpu.tflite")
    json.dump(meta, open(os.path.join(folder, "model.json"), "w"))
    return load_bundle(folder)


def test_bundle_with_compiled_model_falls_back_to_int8_twin(tiny_bundle, tmp_path):  # noqa: F811
    bundle = _bundle_with_compiled(tiny_bundle, str(tmp_path / "b"))
    engine, key = runtime.open_bundle_engine(bundle, "auto", "auto", num_threads=1)
    assert key == "int8" and engine.failure == "library missing"
    with pytest.raises(UserError, match="library missing"):
        runtime.open_bundle_engine(bundle, "edgetpu", "int8")


def test_bundle_uses_the_compiled_model_when_the_tpu_works(tiny_bundle, tmp_path, monkeypatch):  # noqa: F811
    # MOCK: there is no Edge TPU here. The delegate "loads" and returns no delegate object,
    # so the interpreter is a plain CPU one; what is tested is which file is chosen.
    bundle = _bundle_with_compiled(tiny_bundle, str(tmp_path / "b"))
    seen = {}

    def fake_delegate(rt, device):
        seen["device"] = device
        return None
    monkeypatch.setattr(runtime, "_load_edgetpu_delegate", fake_delegate)
    monkeypatch.setattr(runtime, "_build_interpreter",
                        lambda rt, path, delegates, threads: rt.interpreter_cls(model_path=path))
    engine, key = runtime.open_bundle_engine(bundle, "edgetpu", "auto", device="usb:1")
    assert key == "edgetpu" and engine.kind == "edgetpu" and seen["device"] == "usb:1"
    assert engine.model_path.endswith("model_int8_edgetpu.tflite")


def test_scan_finds_usb_and_pci_tpus_in_a_sysfs_tree(tmp_path):
    for name, vendor, product in (("1-1", "1a6e", "089a"), ("2-1", "18d1", "9302"), ("3-1", "046d", "c52b")):
        d = tmp_path / "sys/bus/usb/devices" / name
        d.mkdir(parents=True)
        (d / "idVendor").write_text(vendor + "\n")
        (d / "idProduct").write_text(product + "\n")
    (tmp_path / "dev").mkdir()
    (tmp_path / "dev/apex_0").write_text("")
    tpus = devices.scan_edgetpus(str(tmp_path))
    assert tpus == [{"type": "usb", "path": "1-1"}, {"type": "usb", "path": "2-1"},
                    {"type": "pci", "path": "/dev/apex_0"}]
    assert devices.device_names(tpus) == ["usb:0", "usb:1", "pci:0"]


def test_devices_report_names_the_runtime():
    lines = devices.report()
    assert any(line.startswith("TFLite runtimes (first is used): ai_edge_litert") for line in lines)


@pytest.mark.edgetpu
def test_compiled_model_on_a_real_edgetpu_matches_its_cpu_twin():
    if not devices.list_edgetpus():
        pytest.skip("no Edge TPU attached")
    tpu = runtime.open_engine(COMPILED, "edgetpu")
    cpu = runtime.make_cpu_engine(QUANT, num_threads=1)
    assert tpu.kind == "edgetpu" and tpu.model_path == COMPILED
    image = np.random.RandomState(1).randint(0, 256, (1, 128, 128, 3)).astype(np.uint8)
    outs = []
    for interp in (tpu.interpreter, cpu.interpreter):
        interp.set_tensor(interp.get_input_details()[0]["index"], image)
        interp.invoke()
        outs.append(interp.get_tensor(interp.get_output_details()[0]["index"]).astype(int))
    assert np.argmax(outs[0]) == np.argmax(outs[1]) and np.abs(outs[0] - outs[1]).max() <= 3
