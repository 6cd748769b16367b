"""`edgedet-train attach-edgetpu BUNDLE FILE [--log LOG]`: adds a compile made elsewhere.

edgetpu_compiler runs only on x86-64 Linux, so many users compile with Coral's web compiler
and bring `model_int8_edgetpu.tflite` back. This checks that FILE really is a compile of the
bundle's model_int8.tflite (at least one `edgetpu-custom-op`, and the same input and output
tensors: names, dtypes, shapes and quantization), reads the compiler's output when given,
and records the file where the app looks for it: models.edgetpu and edgetpu.compiler in
model.json, the same in report.json, and the Edge TPU section of report.html.

Each file is replaced atomically; model.json, the one the app reads, is written last, so a
failure part-way leaves a bundle that still runs on the CPU as before.
"""

import hashlib
import json
import os

from app import arguments
from app.errors import UserError
from training import bundle_writer, report
from training.edgetpu import compiler_log, op_rules, tflite_schema

QUANT_RTOL = 1e-6  # the compiler copies scales bit for bit; this only forgives float printing
_NOT_A_BUNDLE = "pass a bundle folder written by `edgedet-train export` (e.g. models/demo)"


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (IOError, OSError) as e:
        raise UserError("{}: cannot read ({}); {}".format(path, e.strerror or e, _NOT_A_BUNDLE))
    except ValueError as e:
        raise UserError("{}: invalid JSON ({}); re-export the bundle".format(path, e))
    if not isinstance(data, dict):
        raise UserError("{}: expected a JSON object; re-export the bundle".format(path))
    return data


def read_bundle(bundle_dir):
    """(model.json dict, path of its int8 model) of a bundle directory.

    Raises:
      UserError: not a directory, no readable model.json, or no int8 model in it.
    """
    if not os.path.isdir(bundle_dir):
        raise UserError("BUNDLE {}: no such directory; {}".format(bundle_dir, _NOT_A_BUNDLE))
    where = os.path.join(bundle_dir, "model.json")
    if not os.path.isfile(where):
        raise UserError("BUNDLE {}: no model.json in it; {}".format(bundle_dir, _NOT_A_BUNDLE))
    meta = _read_json(where)
    models = meta.get("models")
    int8 = models.get("int8") if isinstance(models, dict) else None
    if not isinstance(int8, dict) or not isinstance(int8.get("file"), str) \
            or not isinstance(int8.get("outputs"), dict):
        raise UserError("{}: no 'models.int8' entry with 'file' and 'outputs'; only a bundle with a "
                        "uint8 model can take an Edge TPU compile".format(where))
    path = os.path.join(bundle_dir, int8["file"])
    if not os.path.isfile(path):
        raise UserError("{}: 'models.int8.file' names {}, which does not exist; copy the whole "
                        "bundle folder".format(where, path))
    return meta, path


def _describe(t):
    quant = "scale {:.6g} zero point {}".format(t.scale[0], t.zero_point[0]) if t.scale \
        else "not quantized"
    return "{} {} {}".format(t.dtype, list(t.shape), quant)


def _same(a, b):
    if (a.dtype, a.shape, a.zero_point, len(a.scale)) != (b.dtype, b.shape, b.zero_point, len(b.scale)):
        return False
    return all(abs(x - y) <= QUANT_RTOL * max(abs(x), abs(y)) for x, y in zip(a.scale, b.scale))


def io_difference(plain, compiled):
    """The first input or output tensor that differs between two main subgraphs, or None.

    Args:
      plain, compiled: tflite_schema.Subgraph of model_int8.tflite and of the compiled file.

    Returns:
      None when both have the same input and output tensors (name, dtype, shape, scale and
      zero point), else one phrase naming the tensor and both values.
    """
    for role, attr in (("input", "inputs"), ("output", "outputs")):
        want = [plain.tensors[i] for i in getattr(plain, attr)]
        have = {t.name: t for t in (compiled.tensors[i] for i in getattr(compiled, attr))}
        for t in want:
            if t.name not in have:
                return "{} '{}' ({}) is not among its {}s ({})".format(
                    role, t.name, _describe(t), role, ", ".join("'{}'".format(n) for n in have))
            if not _same(t, have[t.name]):
                return "{} '{}' is {} in model_int8.tflite but {} in it".format(
                    role, t.name, _describe(t), _describe(have[t.name]))
        if len(have) != len(want):
            return "it has {} {}s, model_int8.tflite has {}".format(len(have), role, len(want))
    return None


def check_compiled_copy(int8_path, compiled_path):
    """Counts of a checked compile: {"subgraphs", "ops_on_tpu", "ops_on_cpu"}.

    ops_on_tpu / ops_on_cpu count the ops of model_int8.tflite, as the compiler does: the
    ops left outside edgetpu-custom-op run on the CPU, all others inside it.

    Raises:
      UserError: either file is not a .tflite, the compiled one has no edgetpu-custom-op, or
        an input or output tensor differs (the message names it).
    """
    plain = tflite_schema.read_model(int8_path).subgraphs[0]
    compiled = tflite_schema.read_model(compiled_path).subgraphs[0]
    custom = sum(op.custom_code == op_rules.EDGETPU_CUSTOM_OP for op in compiled.ops)
    if not custom:
        raise UserError("{}: has no edgetpu-custom-op, so it is not compiled for the Edge TPU; "
                        "compile {} with edgetpu_compiler (`edgedet-train compile` says how)"
                        .format(compiled_path, int8_path))
    difference = io_difference(plain, compiled)
    if difference:
        raise UserError("{}: not compiled from {}: {}; compile this bundle's model_int8.tflite "
                        "and attach that".format(compiled_path, int8_path, difference))
    on_cpu = len(compiled.ops) - custom
    return {"subgraphs": custom, "ops_on_tpu": len(plain.ops) - on_cpu, "ops_on_cpu": on_cpu}


def read_log(path):
    """Parses a saved edgetpu_compiler output (stdout, or its `.log`) into compiler_log fields.

    Raises:
      UserError: unreadable, not a compiler output, or a failed compilation.
    """
    try:
        with open(path) as f:
            text = f.read()
    except (IOError, OSError, UnicodeDecodeError) as e:
        raise UserError("--log {}: cannot read ({}); pass the compiler's output saved to a text "
                        "file".format(path, getattr(e, "strerror", None) or e))
    parsed = compiler_log.parse_compiler_output(text, text)
    if "compiler_version" not in parsed and not parsed["op_table"]:
        raise UserError("--log {}: not an edgetpu_compiler output (no 'Edge TPU Compiler version' "
                        "line and no operator table); pass what the compiler printed".format(path))
    if parsed["errors"]:
        raise UserError("--log {}: the compilation failed ({}); fix the model and compile again"
                        .format(path, " | ".join(parsed["errors"])))
    parsed.pop("succeeded")  # a .log has no verdict line; the compiled file is the proof
    return parsed


def _check_log_matches(log, counts, log_path, compiled_path):
    """UserError when the log's CPU-op or subgraph count is not the compiled file's."""
    logged_cpu = log.get("ops_on_cpu")
    if logged_cpu is None and log["op_table"]:
        logged_cpu = sum(row["count"] for row in log["cpu_ops"])
    for key, logged in (("ops_on_cpu", logged_cpu), ("subgraphs", log.get("subgraphs"))):
        if logged is not None and logged != counts[key]:
            raise UserError("--log {}: says {} = {} but {} has {}; pass the log of this compile"
                            .format(log_path, key, logged, compiled_path, counts[key]))


def compiler_record(int8_path, compiled_path, log=None, log_path=None):
    """The edgetpu.compiler entry for a checked compile.

    Args:
      int8_path, compiled_path: the bundle's uint8 model and its compile.
      log: compiler_log fields of the compile (from `read_log`, or a run here), or None.
      log_path: where `log` was read from or saved to, for messages.

    Returns:
      dict: the log's fields, "available": True (a compile is in the bundle), and
      "subgraphs", "ops_on_tpu", "ops_on_cpu" counted in the files.
    """
    counts = check_compiled_copy(int8_path, compiled_path)
    if log:
        _check_log_matches(log, counts, log_path, compiled_path)
    return dict(log or {}, available=True, **counts)


def _provenance(compiled_path, log_path):
    """Where an attached compile came from: {"from", "sha256", "log"} (absolute paths)."""
    with open(compiled_path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    return {"from": os.path.abspath(compiled_path), "sha256": digest,
            "log": os.path.abspath(log_path) if log_path else None}


def _reports(bundle_dir, meta):
    """{path: new text} for report.json (edgetpu, models) and report.html (its Edge TPU
    section), for those of the two the bundle has."""
    texts = {}
    path = os.path.join(bundle_dir, "report.json")
    if os.path.isfile(path):
        rep = dict(_read_json(path), edgetpu=meta["edgetpu"], models=meta["models"])
        texts[path] = bundle_writer.json_text(rep)
    path = os.path.join(bundle_dir, "report.html")
    if os.path.isfile(path):
        try:
            with open(path) as f:
                page = report.replace_edgetpu_section(f.read(), meta["edgetpu"])
        except (IOError, OSError, UnicodeDecodeError) as e:
            raise UserError("{}: cannot read ({}); restore it from the export or delete it"
                            .format(path, getattr(e, "strerror", None) or e))
        if page is not None:
            texts[path] = page
    return texts


def attach(bundle_dir, compiled_path, record):
    """Copies a checked compile into the bundle and records it (see the module docstring).

    Everything is read and prepared before the first write.

    Args:
      bundle_dir: the bundle directory.
      compiled_path: the compiled .tflite (checked by `compiler_record`).
      record: the edgetpu.compiler entry from `compiler_record`.

    Returns:
      list of the files written, bundle-relative.
    """
    meta, _ = read_bundle(bundle_dir)
    meta["models"]["edgetpu"] = bundle_writer.edgetpu_entry(meta["models"]["int8"])
    meta["edgetpu"] = dict(meta.get("edgetpu") or {}, compiler=record)
    reports = _reports(bundle_dir, meta)
    bundle_writer.copy_file_atomic(compiled_path, os.path.join(bundle_dir, bundle_writer.EDGETPU_FILE))
    for path, text in reports.items():
        bundle_writer.write_text_atomic(path, text)
    bundle_writer.write_json_atomic(os.path.join(bundle_dir, "model.json"), meta)
    return [bundle_writer.EDGETPU_FILE] + [os.path.basename(p) for p in reports] + ["model.json"]


def add_arguments(parser):
    parser.add_argument("bundle", metavar="BUNDLE", type=arguments.input_dir, help="the bundle folder, e.g. models/mine")
    parser.add_argument("file", metavar="FILE", type=arguments.input_file,
                        help="model_int8_edgetpu.tflite compiled from the bundle's model_int8.tflite")
    parser.add_argument("--log", metavar="LOG", default=None, type=arguments.input_file,
                        help="the compiler's output saved to a file (stdout or its .log)")


def run(args):
    _, int8_path = read_bundle(args.bundle)
    log = read_log(args.log) if args.log else None
    record = compiler_record(int8_path, args.file, log, args.log)
    record["attached"] = _provenance(args.file, args.log)
    written = attach(args.bundle, args.file, record)
    print("attached {} to {}: {} Edge TPU subgraph(s), {} of {} ops on the Edge TPU; wrote {}"
          .format(args.file, args.bundle, record["subgraphs"], record["ops_on_tpu"],
                  record["ops_on_tpu"] + record["ops_on_cpu"], ", ".join(written)))
    return 0
