"""The edgetpu_compiler runner.

edgetpu_compiler cannot exist on this machine (no Coral apt repository, and no network), so
these tests put a FAKE `edgetpu_compiler` shell script on PATH. That is the one thing mocked
here: the fake prints the verbatim text of a real compiler run from
../shared/fixtures/edgetpu_compiler/, copies the real `.log`, and exits with a chosen status.
Everything else (PATH lookup, subprocess, exit-status and text checks, parsing) is real.
"""

import os
import shlex
import stat

import pytest

from app.errors import UserError
from tests.conftest import COMPILER_LOGS
from training.edgetpu import compiler

_SCRIPT = """#!/bin/sh
# FAKE edgetpu_compiler for tests: replays a real compiler run.
printf '%s\\n' "$@" > {args_file}
out=""; model=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out="$2"; shift 2 ;;
    -s) shift ;;
    *) model="$1"; shift ;;
  esac
done
cat {stdout_file}
{copy_log}
{write_model}
exit {status}
"""


def _fake_compiler(tmp_path, monkeypatch, stdout_name, status, log_name=None,
                   compiled_name=None):
    """Writes the fake script into tmp_path/bin and puts that first on PATH."""
    for name in (stdout_name, log_name):
        if name and not (COMPILER_LOGS / name).is_file():
            pytest.skip("fixture {} is missing".format(name))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    copy_log = write_model = ""
    if log_name:
        copy_log = 'cp {} "$out"/efficientdet_coral_v2_edgetpu.log'.format(
            shlex.quote(str(COMPILER_LOGS / log_name)))
    if compiled_name:
        write_model = 'cp "$model" "$out"/{}'.format(compiled_name)
    script = bin_dir / "edgetpu_compiler"
    script.write_text(_SCRIPT.format(
        args_file=shlex.quote(str(tmp_path / "args.txt")),
        stdout_file=shlex.quote(str(COMPILER_LOGS / stdout_name)),
        copy_log=copy_log, write_model=write_model, status=status))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
    return tmp_path / "args.txt"


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model_int8.tflite"
    path.write_bytes(b"TFL3 stand-in; the fake compiler only copies it")
    out = tmp_path / "out"
    out.mkdir()
    return path, out


def test_success_parses_stdout_and_log(tmp_path, monkeypatch, model):
    model_path, out = model
    args_file = _fake_compiler(tmp_path, monkeypatch, "B_v16_efficientdet_stdout.txt", 0,
                               log_name="B_v16_efficientdet_edgetpu.log",
                               compiled_name="efficientdet_coral_v2_edgetpu.tflite")
    assert compiler.find_compiler() == str(tmp_path / "bin" / "edgetpu_compiler")
    r = compiler.compile_model(model_path, out)
    assert args_file.read_text().split("\n")[:4] == ["-s", "-o", str(out), str(model_path)]
    assert r["available"] is True and r["succeeded"] is True
    assert r["compiler_version"] == "16.0.384591198"
    assert (r["ops_on_tpu"], r["ops_on_cpu"], r["subgraphs"]) == (264, 3, 1)
    assert r["on_chip_memory_used_bytes"] == 4414505
    # The per-op table came from the .log the compiler wrote next to the model.
    assert sorted((row["op"], row["count"]) for row in r["cpu_ops"]) == [
        ("CUSTOM", 1), ("DEQUANTIZE", 2)]
    assert r["edgetpu_model"] == str(out / "efficientdet_coral_v2_edgetpu.tflite")
    assert os.path.getsize(r["edgetpu_model"]) == model_path.stat().st_size


def test_failure_raises_with_the_compiler_errors(tmp_path, monkeypatch, model):
    model_path, out = model
    _fake_compiler(tmp_path, monkeypatch, "D_v16_failure_custom_op.txt", 1)
    with pytest.raises(compiler.CompilerError) as info:
        compiler.compile_model(model_path, out)
    err = info.value
    assert err.returncode == 1
    assert err.errors[0] == "ERROR: Encountered unresolved custom op: Atan."
    assert len(err.errors) == 3
    assert "unresolved custom op: Atan" in str(err) and "exit status 1" in str(err)
    assert isinstance(err, UserError)            # one line + exit 2 through run_cli


def test_nonzero_exit_fails_even_with_success_text(tmp_path, monkeypatch, model):
    model_path, out = model
    _fake_compiler(tmp_path, monkeypatch, "A_v16_show_ops_yolov5s_edgetpu-yolo.txt", 3,
                   compiled_name="yolov5s-int8-224_edgetpu.tflite")
    with pytest.raises(compiler.CompilerError, match="exit status 3") as info:
        compiler.compile_model(model_path, out)
    assert info.value.result["ops_on_tpu"] == 289


def test_failure_text_fails_even_with_exit_zero(tmp_path, monkeypatch, model):
    model_path, out = model
    _fake_compiler(tmp_path, monkeypatch, "D_v16_failure_custom_op.txt", 0)
    with pytest.raises(compiler.CompilerError, match="Atan"):
        compiler.compile_model(model_path, out)


def test_success_without_compiled_file_fails(tmp_path, monkeypatch, model):
    model_path, out = model
    _fake_compiler(tmp_path, monkeypatch, "A_v16_show_ops_yolov5s_edgetpu-yolo.txt", 0)
    with pytest.raises(compiler.CompilerError, match="wrote no"):
        compiler.compile_model(model_path, out)


def test_absent_compiler_says_how_to_get_it(tmp_path, monkeypatch, model):
    model_path, out = model
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert compiler.find_compiler() is None
    r = compiler.compile_model(model_path, out)
    assert r["available"] is False
    assert "edgetpu-compiler" in r["how_to_get"] and "apt" in r["how_to_get"]
    assert "notebook" in r["how_to_get"]
    assert list(out.iterdir()) == []


def test_missing_model_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no such .tflite"):
        compiler.compile_model(tmp_path / "nope.tflite", tmp_path)
