"""Runs Google's `edgetpu_compiler` on a full-integer .tflite, when it is installed.

The compiler exists only for x86-64 Linux. When it is not on PATH, `compile_model` returns
a result that says how to get it instead of failing, so an export can continue with the
CPU model and the preflight prediction.
"""

import os
import pathlib
import shutil
import subprocess

from app.errors import UserError
from training.edgetpu import compiler_log

COMPILER = "edgetpu_compiler"
HOW_TO_GET = (
    "edgetpu_compiler is not on PATH. On x86-64 Debian/Ubuntu install the apt package "
    "'edgetpu-compiler' from Coral's apt repository (https://coral.ai/docs/edgetpu/compiler/: "
    "add 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main', then "
    "'sudo apt-get install edgetpu-compiler'); on any other machine upload model_int8.tflite "
    "to Coral's compile notebook (Colab, linked from that page) and attach the returned "
    "model_int8_edgetpu.tflite with `edgedet-train attach-edgetpu BUNDLE "
    "model_int8_edgetpu.tflite --log OUTPUT.txt` (`edgedet-train compile BUNDLE` prints "
    "every step).")
DEFAULT_TIMEOUT_S = 600


class CompilerError(UserError):
    """edgetpu_compiler failed. `errors` holds its error lines, `result` the parsed output."""

    def __init__(self, message, errors=(), result=None, returncode=None):
        super().__init__(message)
        self.errors = list(errors)
        self.result = result
        self.returncode = returncode


def find_compiler():
    """Returns the path of `edgetpu_compiler` on PATH, or None."""
    return shutil.which(COMPILER)


def _read_log(out_dir, parsed):
    """The `.log` named on the "Operation log:" line; the compiler writes it into out_dir."""
    name = parsed.get("operation_log")
    if not name:
        return None
    path = pathlib.Path(out_dir) / pathlib.PurePath(name).name
    return path.read_text() if path.is_file() else None


def _run(exe, model_path, out_dir, timeout_s):
    cmd = [exe, "-s", "-o", str(out_dir), str(model_path)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        raise CompilerError("{} did not finish within {} s on {}; try a smaller model or a "
                            "longer timeout".format(COMPILER, timeout_s, model_path))
    except OSError as e:
        raise CompilerError("cannot run {} ({}): {}".format(exe, COMPILER, e))
    return proc.returncode, proc.stdout


def _output_model(out_dir, model_path, parsed):
    name = parsed.get("output_model")
    if name:
        return pathlib.Path(out_dir) / pathlib.PurePath(name).name
    return pathlib.Path(out_dir) / (pathlib.Path(model_path).stem + "_edgetpu.tflite")


def compile_model(model_path, out_dir, timeout_s=DEFAULT_TIMEOUT_S, compiler=None):
    """Compiles a full-integer .tflite for the Edge TPU.

    Runs `edgetpu_compiler -s -o OUT_DIR MODEL`. Success needs BOTH exit status 0 and the
    compiler's own success text; anything else raises.

    Args:
      model_path: the uint8 .tflite to compile.
      out_dir: existing directory that receives `<stem>_edgetpu.tflite` and the `.log`.
      timeout_s: seconds before the compiler is abandoned.
      compiler: path of the compiler; None looks for `edgetpu_compiler` on PATH.

    Returns:
      dict. When the compiler is absent: {"available": False, "how_to_get": str}. Otherwise
      the `compiler_log.parse_compiler_output` fields plus "available": True,
      "edgetpu_model": str path of the compiled file, "stdout": the compiler's text.

    Raises:
      UserError: model_path or out_dir does not exist.
      CompilerError: non-zero exit, no success text, or no compiled file; the message
        carries the compiler's error lines.
    """
    model_path = pathlib.Path(model_path)
    if not model_path.is_file():
        raise UserError("{}: no such .tflite to compile; export the int8 model first"
                        .format(model_path))
    if not pathlib.Path(out_dir).is_dir():
        raise UserError("{}: compiler output directory does not exist".format(out_dir))
    exe = compiler or find_compiler()
    if exe is None:
        return {"available": False, "how_to_get": HOW_TO_GET}
    returncode, stdout = _run(exe, model_path, out_dir, timeout_s)
    parsed = compiler_log.parse_compiler_output(stdout)
    log_text = _read_log(out_dir, parsed)
    if log_text:
        # Without -s support (or on older versions) the per-op table is only in the log.
        parsed = compiler_log.parse_compiler_output(stdout, log_text)
    _check(returncode, parsed, model_path, stdout)
    compiled = _output_model(out_dir, model_path, parsed)
    if not compiled.is_file():
        raise CompilerError("{} reported success on {} but wrote no {}".format(
            COMPILER, model_path, compiled), result=parsed, returncode=returncode)
    parsed.update(available=True, edgetpu_model=str(compiled), stdout=stdout)
    return parsed


def _check(returncode, parsed, model_path, stdout):
    """Raises CompilerError unless the exit status AND the printed text both say success."""
    if returncode == 0 and parsed["succeeded"]:
        return
    errors = parsed["errors"] or [line.strip() for line in stdout.splitlines()
                                  if line.strip()][-3:]
    raise CompilerError(
        "{} failed on {} (exit status {}): {}. Run `edgedet-train preflight {}` to see which "
        "ops the Edge TPU cannot run".format(COMPILER, model_path, returncode,
                                             " | ".join(errors) or "no output",
                                             os.fspath(model_path)),
        errors=errors, result=parsed, returncode=returncode)
