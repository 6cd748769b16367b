"""`edgedet-train attach-edgetpu` and `edgedet-train compile`, with real compiled pairs.

The bundle here is bundle-shaped, not exported: a folder holding the real
mobilenet_v1_0.25_128_quant.tflite as model_int8.tflite (a classifier, so both output roles
name its one output tensor), a model.json the app's reader accepts, and the demo bundle's real
report.json/report.html. Its real `_edgetpu` twin from ../shared/fixtures/coral_test_data/ must
be accepted, and the real compiled DeepLab refused.
"""

import json
import os
import shlex
import shutil
import stat

import numpy as np
import pytest

from app.inference import runtime
from app.model.bundle import load_bundle
from app.errors import run_cli
from tests.conftest import COMPILER_LOGS, ROOT
from training import cli
from training.edgetpu import attach, tflite_schema

PLAIN = "mobilenet_v1_0.25_128_quant.tflite"
TWIN = "mobilenet_v1_0.25_128_quant_edgetpu.tflite"
OTHER = "deeplabv3_mnv2_dm05_pascal_quant_edgetpu.tflite"
OUTPUT = "MobilenetV1/Predictions/Reshape_1"
OLD_TEXT = "edgetpu_compiler is not on PATH"  # the demo report's note before a compile is attached


def _stdout_for_twin():
    """Real v16 stdout (fixture B, efficientdet) with the file names and op counts of the
    mobilenet pair (31 ops, all mapped), so it describes the twin: the compiler cannot run here."""
    text = (COMPILER_LOGS / "B_v16_efficientdet_stdout.txt").read_text()
    for old, new in (("efficientdet_coral_v2", "model_int8"), ("operations: 267", "operations: 31"),
                     ("Edge TPU: 264", "Edge TPU: 31"), ("CPU: 3", "CPU: 0")):
        assert old in text
        text = text.replace(old, new)
    return text


@pytest.fixture
def bundle(tmp_path, coral_dir):
    folder = tmp_path / "mine"
    folder.mkdir()
    shutil.copyfile(str(coral_dir / PLAIN), str(folder / "model_int8.tflite"))
    for name in ("report.json", "report.html"):
        shutil.copyfile(str(ROOT / "models" / "demo" / name), str(folder / name))
    np.save(str(folder / "anchors.npy"), np.array([[0.5, 0.5, 1.0, 1.0]], np.float32))
    int8 = {"file": "model_int8.tflite", "outputs": {"box_encodings": OUTPUT, "class_logits": OUTPUT},
            "input_quantization": [0.0078125, 128]}
    meta = {"format_version": 1, "labels": ["thing"],
            "input": {"height": 128, "width": 128, "float_range": [-1.0, 1.0]}, "num_anchors": 1,
            "box_coder": {"y_scale": 10.0, "x_scale": 10.0, "height_scale": 5.0, "width_scale": 5.0},
            "score_converter": "sigmoid", "models": {"int8": int8},
            "edgetpu": {"preflight": {"ops_total": 31}, "compiler": {"available": False}}}
    (folder / "model.json").write_text(json.dumps(meta))
    return folder


def _files(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_attach_accepts_the_real_compiled_twin(bundle, coral_dir, tmp_path, capsys):
    log = tmp_path / "compile.txt"
    log.write_text(_stdout_for_twin())
    assert OLD_TEXT in (bundle / "report.html").read_text()
    assert cli.main(["attach-edgetpu", str(bundle), str(coral_dir / TWIN), "--log", str(log)]) == 0
    assert "31 of 31 ops on the Edge TPU" in capsys.readouterr().out

    assert (bundle / "model_int8_edgetpu.tflite").read_bytes() == (coral_dir / TWIN).read_bytes()
    meta = json.loads((bundle / "model.json").read_text())
    assert meta["models"]["edgetpu"] == dict(meta["models"]["int8"], file="model_int8_edgetpu.tflite")
    comp = meta["edgetpu"]["compiler"]
    assert (comp["subgraphs"], comp["ops_on_tpu"], comp["ops_on_cpu"]) == (1, 31, 0)
    assert comp["compiler_version"] == "16.0.384591198"
    assert comp["on_chip_memory_used_bytes"] == int(round(4.21 * (1 << 20)))
    assert comp["attached"]["from"] == str(coral_dir / TWIN) and comp["attached"]["log"] == str(log)
    assert len(comp["attached"]["sha256"]) == 64
    assert meta["edgetpu"]["preflight"] == {"ops_total": 31}          # kept as it was

    rep = json.loads((bundle / "report.json").read_text())
    assert rep["edgetpu"] == meta["edgetpu"] and rep["models"] == meta["models"]
    assert rep["fidelity"]["passed"] is True                             # the rest untouched
    page = (bundle / "report.html").read_text()
    assert OLD_TEXT not in page and "attach-edgetpu" in page and "16.0.384591198" in page
    assert page.count("<h2>Edge TPU</h2>") == 1 and page.endswith("</body></html>")
    assert "<h2>Quantization (model_int8.tflite)</h2>" in page
    assert sorted(p.name for p in bundle.iterdir()) == [
        "anchors.npy", "model.json", "model_int8.tflite", "model_int8_edgetpu.tflite",
        "report.html", "report.json"]                                    # no temp file left
    assert stat.S_IMODE((bundle / "model_int8_edgetpu.tflite").stat().st_mode) == 0o644


def test_attach_refuses_a_file_compiled_from_another_model(bundle, coral_dir, capsys):
    before = _files(bundle)
    code = run_cli(cli.main, ["attach-edgetpu", str(bundle), str(coral_dir / OTHER)], prog="edgedet-train")
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert "not compiled from" in err[0] and "input 'input'" in err[0]
    assert "'MobilenetV2/MobilenetV2/input'" in err[0]
    assert _files(bundle) == before                                      # nothing written


def test_a_differing_quantization_is_named(coral_dir):
    plain = tflite_schema.read_model(coral_dir / PLAIN).subgraphs[0]
    compiled = tflite_schema.read_model(coral_dir / TWIN).subgraphs[0]
    assert attach.io_difference(plain, compiled) is None
    out = compiled.outputs[0]
    tensors = list(compiled.tensors)
    tensors[out] = tensors[out]._replace(scale=(0.004,))
    text = attach.io_difference(plain, compiled._replace(tensors=tensors))
    assert text == ("output '{}' is uint8 [1, 1001] scale 0.00390625 zero point 0 in "
                    "model_int8.tflite but uint8 [1, 1001] scale 0.004 zero point 0 in it".format(OUTPUT))


def _bad_inputs(bundle, coral_dir, tmp_path):
    not_tflite = tmp_path / "photo.tflite"
    not_tflite.write_bytes((coral_dir / "face.jpg").read_bytes()[:2048])
    binary_log = tmp_path / "log.bin"
    binary_log.write_bytes(b"\xff\xfe\x00 not text")
    prose = tmp_path / "notes.txt"
    prose.write_text("compiled it on the web, looked fine\n")
    float_only = tmp_path / "float_only"
    float_only.mkdir()
    (float_only / "model.json").write_text('{"models": ["model_float.tflite"]}')
    twin = str(coral_dir / TWIN)
    return [
        (["attach-edgetpu", str(float_only), twin], "no 'models.int8' entry"),
        (["attach-edgetpu", str(tmp_path / "missing"), twin], "no such folder"),
        (["attach-edgetpu", str(tmp_path), twin], "no model.json"),
        (["attach-edgetpu", str(bundle), str(tmp_path / "missing.tflite")], "no such file"),
        (["attach-edgetpu", str(bundle), str(not_tflite)], "not a TFLite model"),
        (["attach-edgetpu", str(bundle), str(coral_dir / PLAIN)], "has no edgetpu-custom-op"),
        (["attach-edgetpu", str(bundle), twin, "--log", str(tmp_path / "none.txt")], "--log"),
        (["attach-edgetpu", str(bundle), twin, "--log", str(binary_log)], "cannot read"),
        (["attach-edgetpu", str(bundle), twin, "--log", str(prose)], "not an edgetpu_compiler output"),
        (["attach-edgetpu", str(bundle), twin, "--log",
          str(COMPILER_LOGS / "D_v16_failure_custom_op.txt")], "the compilation failed"),
        (["attach-edgetpu", str(bundle), twin, "--log",
          str(COMPILER_LOGS / "B_v16_efficientdet_stdout.txt")], "says ops_on_cpu = 3"),
        (["compile", str(tmp_path / "missing")], "no such folder"),
        (["compile", str(bundle), "--log", str(tmp_path / "no_dir" / "c.txt")], "does not exist"),
    ]


def test_every_bad_input_is_one_line_and_exit_2(bundle, coral_dir, tmp_path, capsys):
    before = _files(bundle)
    for argv, words in _bad_inputs(bundle, coral_dir, tmp_path):
        assert run_cli(cli.main, argv, prog="edgedet-train") == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], (argv, err)
    assert _files(bundle) == before


def test_the_app_runs_the_attached_file_on_the_edge_tpu(bundle, coral_dir, monkeypatch):
    assert run_cli(cli.main, ["attach-edgetpu", str(bundle), str(coral_dir / TWIN)]) == 0
    loaded = load_bundle(str(bundle))
    assert loaded.models["edgetpu"].file == str(bundle / "model_int8_edgetpu.tflite")
    # MOCK: there is no Edge TPU here. The delegate "loads" as None and the interpreter is
    # built without allocating (only the delegate could run edgetpu-custom-op); what is
    # tested is that --runtime edgetpu picks the attached file.
    monkeypatch.setattr(runtime, "_load_edgetpu_delegate", lambda rt, device: None)
    monkeypatch.setattr(runtime, "_build_interpreter",
                        lambda rt, path, delegates, threads: rt.interpreter_cls(model_path=path))
    engine, key = runtime.open_bundle_engine(loaded, "edgetpu", "auto")
    assert (key, engine.kind) == ("edgetpu", "edgetpu")
    assert engine.model_path == str(bundle / "model_int8_edgetpu.tflite")
    assert runtime.is_compiled(engine.model_path)


def test_compile_without_the_compiler_says_how_to_compile_and_attach(bundle, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(bundle))                  # no edgetpu_compiler on it
    assert cli.main(["compile", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "edgetpu_compiler -s -o . model_int8.tflite" in out and "Colab" in out
    assert "edgedet-train attach-edgetpu {} model_int8_edgetpu.tflite --log compile.txt".format(bundle) in out
    assert not (bundle / "model_int8_edgetpu.tflite").exists()


def test_compile_runs_the_compiler_and_records_like_attach(bundle, coral_dir, tmp_path, monkeypatch):
    # MOCK: edgetpu_compiler cannot exist here. A fake on PATH prints a real v16 stdout (see
    # _stdout_for_twin) and writes the real compiled twin where the compiler would.
    stdout = tmp_path / "stdout.txt"
    stdout.write_text(_stdout_for_twin())
    fake = tmp_path / "bin" / "edgetpu_compiler"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\nwhile [ "$1" != "-o" ]; do shift; done\ncat {}\ncp {} "$2"/model_int8_edgetpu.tflite\n'
                    .format(shlex.quote(str(stdout)), shlex.quote(str(coral_dir / TWIN))))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent) + os.pathsep + os.environ["PATH"])
    saved = tmp_path / "compile.txt"
    assert cli.main(["compile", str(bundle), "--log", str(saved)]) == 0
    assert saved.read_text() == stdout.read_text()
    assert (bundle / "model_int8_edgetpu.tflite").read_bytes() == (coral_dir / TWIN).read_bytes()
    meta = json.loads((bundle / "model.json").read_text())
    comp = meta["edgetpu"]["compiler"]
    assert comp["succeeded"] is True and comp["compiler_version"] == "16.0.384591198"
    assert (comp["subgraphs"], comp["ops_on_tpu"], comp["ops_on_cpu"]) == (1, 31, 0)
    assert "attached" not in comp                           # compiled here, not brought in
    assert load_bundle(str(bundle)).models["edgetpu"].outputs["class_logits"] == OUTPUT
