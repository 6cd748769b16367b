"""Interpreter selection: the genuine pycoral, then tflite_runtime, then ai_edge_litert.

Every runtime is driven through the same two calls: a TFLite `Interpreter` and, for
the Edge TPU, `load_delegate(<libedgetpu>, {"device": ...})`. The genuine pycoral is
recognised by `pycoral.utils.edgetpu` (the PyPI package called `pycoral` is unrelated
and has no such module). When the delegate does not load, the error text is
classified (no device / ABI mismatch / permissions / library missing) so the log
says what to fix instead of only "Failed to load delegate".

A compiled `*_edgetpu.tflite` holds one `edgetpu-custom-op` that only the delegate can
run. On the CPU such a file is swapped for its CPU twin (the same name without
`_edgetpu`, or the bundle's int8 model).
"""

import collections
import ctypes
import importlib
import logging
import os
import platform
import re

from app.errors import UserError

log = logging.getLogger(__name__)

EDGETPU_LIBRARY = {
    "Linux": "libedgetpu.so.1",
    "Darwin": "libedgetpu.1.dylib",
    "Windows": "edgetpu.dll",
}.get(platform.system(), "libedgetpu.so.1")

EDGETPU_OP = b"edgetpu-custom-op"
_DEVICE_RE = re.compile(r"^(usb|pci)(:\d+)?$|^:\d+$")

# Where a runtime came from and how to call it.
Runtime = collections.namedtuple("Runtime", "name version interpreter_cls load_delegate")
# A ready interpreter and what it runs on. `kind` is "edgetpu" or "cpu"; `failure` is the
# delegate failure class when the Edge TPU was wanted but not used, else "".
Engine = collections.namedtuple("Engine", "interpreter runtime kind device model_path num_threads failure")


def _try_import(name):
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def _dist_version(*names):
    try:
        import importlib.metadata as md  # novermin (guarded: Python 3.7 reports "unknown")
    except ImportError:
        return "unknown"
    for name in names:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            continue
    return "unknown"


def genuine_pycoral():
    """Returns `pycoral.utils.edgetpu` if the genuine Coral pycoral is installed, else None."""
    return _try_import("pycoral.utils.edgetpu")


def available_runtimes():
    """All importable TFLite runtimes, in preference order.

    Returns:
      list of Runtime (name, version, Interpreter class, load_delegate function).
    """
    found = []
    if genuine_pycoral() is not None:
        # pycoral drives tflite_runtime underneath; its own version is what users report.
        tfl = _try_import("tflite_runtime.interpreter")
        if tfl is not None:
            found.append(Runtime("pycoral", _dist_version("pycoral"), tfl.Interpreter, tfl.load_delegate))
    for name, module, dists in (("tflite_runtime", "tflite_runtime.interpreter", ("tflite-runtime", "tflite_runtime")),
                                ("ai_edge_litert", "ai_edge_litert.interpreter", ("ai-edge-litert",))):
        mod = _try_import(module)
        if mod is not None:
            found.append(Runtime(name, _dist_version(*dists), mod.Interpreter, mod.load_delegate))
    return found


def default_runtime():
    """The preferred runtime; UserError when none is installed."""
    found = available_runtimes()
    if not found:
        raise UserError("no TFLite runtime found. Install one: pip install ai-edge-litert "
                        "(or apt install python3-pycoral / python3-tflite-runtime on a Coral board)")
    return found[0]


def check_device(device):
    """Validates an Edge TPU device string: usb, usb:N, pci, pci:N or :N.

    Returns:
      The string unchanged; "" means "any".

    Raises:
      UserError: for anything else.
    """
    if device in (None, ""):
        return ""
    if not isinstance(device, str) or not _DEVICE_RE.match(device):
        raise UserError("--device {!r}: expected usb, usb:N, pci, pci:N or :N (N = 0, 1, ...)".format(device))
    return device


def classify_delegate_error(text):
    """Names the likely cause of an Edge TPU delegate failure from its error text.

    Returns:
      One of "library missing", "ABI mismatch", "permissions", "no device".
    """
    low = text.lower()
    if "cannot open shared object" in low or "no such file" in low or "image not found" in low \
            or "could not find module" in low:
        return "library missing"
    if "undefined symbol" in low or "version `" in low or "wrong elf class" in low or "abi" in low \
            or "incompatible" in low:
        return "ABI mismatch"
    if "permission" in low or "libusb_error_access" in low or "eacces" in low or "not permitted" in low:
        return "permissions"
    return "no device"


_FIXES = {
    "library missing": "install libedgetpu1-std (or -max) from the Coral apt repository",
    "ABI mismatch": "the runtime and libedgetpu versions differ; install matching releases",
    "permissions": "add the user to plugdev (USB) or apex (PCIe) and install the udev rules",
    "no device": "plug the Coral in (use a USB 3 port) or check `edgedet devices`",
}


def delegate_fix(failure_class):
    """One-line hint for a failure class from `classify_delegate_error`."""
    return _FIXES.get(failure_class, "")


class DelegateError(Exception):
    """The Edge TPU delegate did not load; `failure_class` says why (see classify_delegate_error)."""

    def __init__(self, message, failure_class):
        super(DelegateError, self).__init__(message)
        self.failure_class = failure_class


DETECTION_POSTPROCESS_OP = b"TFLite_Detection_PostProcess"


def _holds(model_path, op_name):
    with open(model_path, "rb") as f:
        return op_name in f.read()


def is_compiled(model_path):
    """True if a .tflite file was compiled by edgetpu_compiler (holds an edgetpu-custom-op)."""
    return _holds(model_path, EDGETPU_OP)


def has_detection_postprocess(model_path):
    """True if a .tflite file holds the TFLite_Detection_PostProcess custom op (a foreign SSD)."""
    return _holds(model_path, DETECTION_POSTPROCESS_OP)


def cpu_twin(model_path):
    """The CPU-runnable twin of `name_edgetpu.tflite`: `name.tflite` beside it, or None."""
    root, ext = os.path.splitext(model_path)
    if not root.endswith("_edgetpu"):
        return None
    twin = root[:-len("_edgetpu")] + ext
    return twin if os.path.isfile(twin) else None


def check_model_file(model_path):
    """Raises UserError unless `model_path` looks like a whole TFLite flatbuffer."""
    if not os.path.isfile(model_path):
        raise UserError("{}: model file not found. Pass --model with a bundle directory or a .tflite file"
                        .format(model_path))
    with open(model_path, "rb") as f:
        head = f.read(8)
    # Every TFLite flatbuffer carries the file identifier "TFL3" at bytes 4..8.
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise UserError("{}: not a TFLite model (no TFL3 identifier; the file is truncated or corrupt). "
                        "Re-export or re-download it".format(model_path))


def _build_interpreter(rt, model_path, delegates, num_threads):
    kwargs = {"model_path": model_path}
    if delegates:
        kwargs["experimental_delegates"] = delegates
    else:
        kwargs["num_threads"] = num_threads
    try:
        interpreter = rt.interpreter_cls(**kwargs)
        interpreter.allocate_tensors()
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError("{}: the {} interpreter cannot load this model ({}). Re-export it, or use a model "
                        "built for this runtime".format(model_path, rt.name, first))
    return interpreter


def _load_edgetpu_delegate(rt, device):
    options = {"device": device} if device else {}
    try:
        # Load the library ourselves first: when it is missing, some runtimes' Delegate
        # objects fail half-built and print a traceback from __del__ on top of our message.
        ctypes.CDLL(EDGETPU_LIBRARY)
        return rt.load_delegate(EDGETPU_LIBRARY, options)
    except (OSError, ValueError, RuntimeError) as e:
        text = str(e).strip().replace("\n", " ")
        raise DelegateError("{} ({})".format(text, EDGETPU_LIBRARY), classify_delegate_error(text))


def cpu_threads(num_threads):
    """CPU interpreter threads; 0 means auto: every core but one, at least 1.

    The live interpreter shares the machine with the capture and output threads. On 2 cores,
    a 2-thread interpreter in the threaded app ran the demo at 340 fps against 497 fps with
    1 thread: half of each invoke's work waited for a core the other threads held
    (benchmarks/pipeline.py prints both settings).
    """
    if num_threads < 0:
        raise UserError("num_threads: expected >= 0 (0 = auto: all cores but one), got {}".format(num_threads))
    return num_threads or max(1, (os.cpu_count() or 1) - 1)


def make_cpu_engine(model_path, num_threads=0, rt=None):
    """A CPU interpreter for `model_path`; a compiled model is swapped for its CPU twin.

    Args:
      model_path: .tflite file.
      num_threads: CPU threads; 0 = auto (all cores but one).
      rt: a Runtime, or None for `default_runtime()`.

    Returns:
      Engine with kind "cpu".
    """
    rt = rt or default_runtime()
    check_model_file(model_path)
    if is_compiled(model_path):
        twin = cpu_twin(model_path)
        if twin is None:
            raise UserError("{}: compiled for the Edge TPU (edgetpu-custom-op) and no CPU twin "
                            "(same name without _edgetpu) beside it. Attach a Coral or pass the "
                            "uncompiled model".format(model_path))
        log.warning("%s is compiled for the Edge TPU; the CPU runs its twin %s", model_path, twin)
        model_path = twin
        check_model_file(model_path)
    threads = cpu_threads(num_threads)
    interpreter = _build_interpreter(rt, model_path, None, threads)
    return Engine(interpreter, rt, "cpu", "", model_path, threads, "")


def make_edgetpu_engine(model_path, device="", rt=None):
    """An interpreter with the Edge TPU delegate; DelegateError when the TPU is not usable."""
    rt = rt or default_runtime()
    check_model_file(model_path)
    delegate = _load_edgetpu_delegate(rt, check_device(device))
    interpreter = _build_interpreter(rt, model_path, [delegate], 1)
    return Engine(interpreter, rt, "edgetpu", device, model_path, 1, "")


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise UserError("{} {!r}: expected one of {}".format(name, value, " | ".join(allowed)))


def open_engine(model_path, runtime="auto", device="", num_threads=0, cpu_path=None):
    """Opens `model_path` on the Edge TPU or the CPU as `runtime` asks.

    Args:
      model_path: the .tflite to run on the Edge TPU (or on the CPU when runtime is "cpu").
      runtime: "auto" (Edge TPU, else CPU with a warning), "edgetpu" (fail without one) or "cpu".
      device: Edge TPU device string ("" = first found).
      num_threads: CPU interpreter threads, 0 = auto (all cores but one).
      cpu_path: model to run on the CPU instead of `model_path` (a bundle's int8 twin).

    Returns:
      Engine.

    Raises:
      UserError: bad model, bad device string, or runtime "edgetpu" without a usable TPU.
    """
    _check_choice("--runtime", runtime, ("auto", "edgetpu", "cpu"))
    check_device(device)
    rt = default_runtime()
    failure = ""
    if runtime != "cpu":
        try:
            return make_edgetpu_engine(model_path, device, rt)
        except DelegateError as e:
            if runtime == "edgetpu":
                raise UserError("--runtime edgetpu: the Edge TPU delegate did not load: {} [{}]. Fix: {}"
                                .format(e, e.failure_class, delegate_fix(e.failure_class)))
            log.warning("Edge TPU not used (%s: %s); running on the CPU. Fix: %s",
                        e.failure_class, e, delegate_fix(e.failure_class))
            failure = e.failure_class
    return make_cpu_engine(cpu_path or model_path, num_threads, rt)._replace(failure=failure)


def _bundle_file(bundle, key):
    entry = bundle.models.get(key)
    return None if entry is None else os.path.join(bundle.path, entry.file)


def open_bundle_engine(bundle, runtime="auto", precision="auto", device="", num_threads=0):
    """Picks and opens the bundle model that runs live.

    float always runs on the CPU; int8 runs the compiled model on the Edge TPU when there
    is one and the TPU works, else model_int8.tflite on the CPU.

    Args:
      bundle: app.model.bundle.Bundle.
      runtime: "auto" | "edgetpu" | "cpu".
      precision: "auto" | "int8" | "float".
      device: Edge TPU device string.
      num_threads: CPU threads, 0 = auto (all cores but one).

    Returns:
      (Engine, model key "edgetpu" | "int8" | "float").
    """
    _check_choice("--runtime", runtime, ("auto", "edgetpu", "cpu"))
    _check_choice("--precision", precision, ("auto", "int8", "float"))
    check_device(device)
    if precision == "float":
        if runtime == "edgetpu":
            raise UserError("--precision float runs on the CPU only; use --runtime auto or cpu")
        return make_cpu_engine(_bundle_file(bundle, "float"), num_threads), "float"
    int8 = _bundle_file(bundle, "int8")
    compiled = _bundle_file(bundle, "edgetpu")
    if runtime != "cpu" and compiled is None:
        if runtime == "edgetpu":
            raise UserError("{0}: the bundle has no model_int8_edgetpu.tflite; compile it with "
                            "`edgedet-train compile {0}` (or attach one compiled elsewhere with "
                            "`edgedet-train attach-edgetpu {0} FILE`) or use --runtime cpu"
                            .format(bundle.path))
        log.info("bundle has no Edge TPU model; running on the CPU")
        runtime = "cpu"
    if int8 is None:
        if precision == "int8" or runtime == "edgetpu":
            raise UserError("{}: the bundle has no int8 model; use --precision float".format(bundle.path))
        log.warning("bundle has no int8 model; running the float model on the CPU")
        return make_cpu_engine(_bundle_file(bundle, "float"), num_threads), "float"
    engine = open_engine(compiled or int8, runtime, device, num_threads, cpu_path=int8)
    return engine, ("edgetpu" if engine.kind == "edgetpu" else "int8")


def input_quantization(interpreter):
    """(dtype name, scale, zero_point) of the first input tensor; scale 0 means not quantized."""
    detail = interpreter.get_input_details()[0]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return detail["dtype"].__name__, float(scale), int(zero_point)


def describe(engine):
    """One start-up log line: runtime + version, where it runs, model file, input quantization."""
    dtype, scale, zero_point = input_quantization(engine.interpreter)
    where = "Edge TPU {}".format(engine.device or "(first found)") if engine.kind == "edgetpu" \
        else "CPU, {} thread{}".format(engine.num_threads, "" if engine.num_threads == 1 else "s")
    text = "runtime {} {} on {}; model {}; input {} scale {:.6g} zero point {}".format(
        engine.runtime.name, engine.runtime.version, where, engine.model_path, dtype, scale, zero_point)
    if engine.failure:
        text += "; Edge TPU delegate failed: {}".format(engine.failure)
    return text
