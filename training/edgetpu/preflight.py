"""Edge TPU preflight: predicts, without the compiler, how edgetpu_compiler maps a .tflite.

`edgedet-train preflight FILE.tflite [--json OUT]`

The compiler builds ONE Edge TPU subgraph. Leading ops it cannot map (a CAST or a
QUANTIZE of a float input: ops that read only the model's inputs, constants or other such
ops) stay on the CPU and feed the subgraph, wherever they sit in execution order. The
subgraph takes the other ops in execution order until the first one it cannot map; that op
and every op after it run on the CPU ("More than one subgraph is not supported"). This is
what edgetpu_compiler v16 did on a pose model (CAST, QUANTIZE first). The per-op rules are
in `op_rules`. A file that is already compiled (it contains `edgetpu-custom-op`)
is reported as it is: the custom op on the TPU, every other op on the CPU.
"""

import collections
import json
import os
import pathlib
import tempfile

from app import arguments
from app.errors import UserError
from training.edgetpu import op_rules
from training.edgetpu import tflite_schema

# Heuristic, not a Coral-documented limit: activations this large have made edgetpu_compiler
# fail with "Compilation failed due to large activation tensors in model" (Coral issues
# #439, #449, #608). Reported as a warning.
LARGE_ACTIVATION_BYTES = 4 << 20
_AFTER_CUT = ("after the first unmapped op (#{} {}): the compiler makes one Edge TPU "
              "subgraph, the rest runs on the CPU")
# Ops that convert a float model input or output to or from 8 bits on the CPU.
EDGE_CONVERSION_OPS = ("CAST", "QUANTIZE", "DEQUANTIZE")
_COMPILED_CPU = "left outside edgetpu-custom-op by edgetpu_compiler"


def _leading_ops(subgraph, reasons):
    """Indices of the unmappable ops that read only model inputs, constants, LSTM state or
    the outputs of other such ops: the compiler leaves them on the CPU before its subgraph."""
    given = set(subgraph.inputs) | {t.index for t in subgraph.tensors if t.is_variable}
    leading = set()
    for op, reason in zip(subgraph.ops, reasons):
        reads = [i for i in op.inputs if i >= 0 and subgraph.tensors[i].data is None]
        if reason is not None and all(i in given for i in reads):
            leading.add(op.index)
            given.update(op.outputs)
    return leading


def _placements(subgraph, compiled):
    """Per op: None (Edge TPU) or the reason it runs on the CPU, in execution order."""
    ops, tensors = subgraph.ops, subgraph.tensors
    reasons = [op_rules.op_reason(op, tensors) for op in ops]
    if compiled:
        return [None if op.custom_code == op_rules.EDGETPU_CUSTOM_OP else
                _COMPILED_CPU + (": " + rule if rule else "") for op, rule in zip(ops, reasons)]
    leading, placements, cut = _leading_ops(subgraph, reasons), [], None
    for op, reason in zip(ops, reasons):
        if reason is None and cut is not None:
            reason = _AFTER_CUT.format(cut.index, tflite_schema.op_label(cut))
        elif reason is not None and cut is None and op.index not in leading:
            cut = op
        placements.append(reason)
    return placements


def _io(subgraph, indices):
    return [{"name": t.name, "dtype": t.dtype, "shape": list(t.shape),
             "quantization": [t.scale[0], t.zero_point[0]] if t.scale else None}
            for t in (subgraph.tensors[i] for i in indices)]


def _edge_conversions(subgraph):
    """Float tensors that only CAST/QUANTIZE/DEQUANTIZE ops touch: a float input or output
    converted on the CPU at the model's edge, which the compiler accepts."""
    touched = collections.defaultdict(set)
    for op in subgraph.ops:
        for i in op.inputs + op.outputs:
            touched[i].add(op.name)
    return {i for i, names in touched.items() if i >= 0 and names <= set(EDGE_CONVERSION_OPS)}


def _problems(model, subgraph):
    """Model-level issues that stop or limit compilation, each one line."""
    problems = []
    if len(model.subgraphs) > 1:
        problems.append("model has {} subgraphs (control flow); only the main one is checked "
                        "and the compiler maps only one".format(len(model.subgraphs)))
    for t in (subgraph.tensors[i] for i in subgraph.inputs):
        if t.shape and t.shape[0] != 1:
            problems.append("input '{}' has batch {} (shape {}); the Edge TPU needs batch 1"
                            .format(t.name, t.shape[0], list(t.shape)))
    # Only tensors ops read or write: LSTM calibration intermediates stay float harmlessly.
    used = sorted({i for op in subgraph.ops for i in op.inputs + op.outputs if i >= 0})
    activations = [subgraph.tensors[i] for i in used if subgraph.tensors[i].data is None]
    dynamic = [t.name for t in activations if any(d < 0 for d in t.signature)]
    if dynamic:
        problems.append("{} tensor(s) have dynamic shapes (e.g. '{}'); convert with fixed "
                        "input shapes".format(len(dynamic), dynamic[0]))
    edges = _edge_conversions(subgraph)
    floats = [t.name for t in activations if t.dtype.startswith("float") and t.index not in edges]
    if floats:
        problems.append("{} float tensor(s) (e.g. '{}'); the Edge TPU needs full-integer "
                        "8-bit models".format(len(floats), floats[0]))
    for op in subgraph.ops:
        if op.name == "CUSTOM" and op.custom_code != op_rules.EDGETPU_CUSTOM_OP and \
                op.custom_code not in op_rules.KNOWN_CPU_CUSTOM_OPS:
            problems.append("custom op '{}' (op #{}) is unknown to the TFLite interpreter the "
                            "compiler uses; compilation will fail".format(op.custom_code,
                                                                          op.index))
    return problems


def _largest_activation(subgraph, placements):
    """The biggest activation an Edge TPU op reads or writes (CPU ops do not limit it)."""
    on_tpu = {i for op, reason in zip(subgraph.ops, placements) if reason is None
              for i in op.inputs + op.outputs if i >= 0}
    activations = [subgraph.tensors[i] for i in sorted(on_tpu)
                   if subgraph.tensors[i].data is None]
    if not activations:
        return None
    t = max(activations, key=tflite_schema.nbytes)
    return {"name": t.name, "shape": list(t.shape), "bytes": tflite_schema.nbytes(t)}


def _op_counts(ops, placements):
    counts = collections.OrderedDict()
    for op, reason in zip(ops, placements):
        entry = counts.setdefault(tflite_schema.op_label(op), {"tpu": 0, "cpu": 0})
        entry["cpu" if reason else "tpu"] += 1
    return counts


def preflight(path):
    """Predicts the Edge TPU mapping of a .tflite file without running the compiler.

    Args:
      path: a .tflite file (uncompiled, or already compiled by edgetpu_compiler).

    Returns:
      dict (JSON-ready): `model` (str), `compiled` (bool: contains edgetpu-custom-op),
      `ops_total`, `ops_on_tpu`, `ops_on_cpu` (int), `subgraphs` (int: Edge TPU subgraphs),
      `cpu_ops` (list of {"index", "op", "reason"}; op is the builtin name, "CUSTOM" for
      custom ops, with "custom_code" added), `op_counts` ({op label: {"tpu", "cpu"}}),
      `problems` and `warnings` (lists of one-line str), `inputs` / `outputs` (name, dtype,
      shape, quantization [scale, zero_point] or None), `largest_activation` (the biggest
      tensor an Edge TPU op touches: name, shape, bytes; None when nothing maps).

    Raises:
      UserError: the file is missing or is not a readable TFLite flatbuffer.
    """
    model = tflite_schema.read_model(path)
    sg = model.subgraphs[0]
    compiled = any(op.custom_code == op_rules.EDGETPU_CUSTOM_OP for op in sg.ops)
    placements = _placements(sg, compiled)
    cpu_ops = []
    for op, reason in zip(sg.ops, placements):
        if reason:
            entry = {"index": op.index, "op": op.name, "reason": reason}
            if op.custom_code is not None:
                entry["custom_code"] = op.custom_code
            cpu_ops.append(entry)
    on_tpu = len(sg.ops) - len(cpu_ops)
    if compiled:
        subgraphs = sum(op.custom_code == op_rules.EDGETPU_CUSTOM_OP for op in sg.ops)
    else:
        subgraphs = 1 if on_tpu else 0
    largest = _largest_activation(sg, placements)
    warnings = []
    if largest and largest["bytes"] > LARGE_ACTIVATION_BYTES and not compiled:
        warnings.append("activation '{}' {} is {:.1f} MiB; edgetpu_compiler has failed on "
                        "activations this large ('large activation tensors'); a smaller input "
                        "size avoids it".format(largest["name"], largest["shape"],
                                                largest["bytes"] / float(1 << 20)))
    problems = _problems(model, sg)
    if sg.ops and not on_tpu:
        problems.append("no op can run on the Edge TPU")
    return {"model": str(path), "compiled": compiled, "ops_total": len(sg.ops),
            "ops_on_tpu": on_tpu, "ops_on_cpu": len(cpu_ops), "subgraphs": subgraphs,
            "cpu_ops": cpu_ops, "op_counts": _op_counts(sg.ops, placements),
            "problems": problems, "warnings": warnings,
            "inputs": _io(sg, sg.inputs), "outputs": _io(sg, sg.outputs),
            "largest_activation": largest}


def format_report(report):
    """The report as text, with an op table laid out like edgetpu_compiler's.

    Args:
      report: dict from `preflight`.

    Returns:
      str, lines joined by newlines.
    """
    lines = ["Edge TPU preflight (predicted without edgetpu_compiler): " + report["model"]]
    if report["compiled"]:
        lines.append("Already compiled for the Edge TPU (contains edgetpu-custom-op).")
    lines += ["Number of Edge TPU subgraphs: {}".format(report["subgraphs"]),
              "Total number of operations: {}".format(report["ops_total"]),
              "Number of operations that will run on Edge TPU: {}".format(report["ops_on_tpu"]),
              "Number of operations that will run on CPU: {}".format(report["ops_on_cpu"]), "",
              "{:<30} {:<10} {}".format("Operator", "Count", "Status"), ""]
    rows = collections.OrderedDict()
    for label, counts in report["op_counts"].items():
        if counts["tpu"]:
            rows[(label, "Mapped to Edge TPU")] = counts["tpu"]
    for entry in report["cpu_ops"]:
        label = "CUSTOM:" + entry["custom_code"] if "custom_code" in entry else entry["op"]
        rows[(label, entry["reason"])] = rows.get((label, entry["reason"]), 0) + 1
    lines += ["{:<30} {:<10} {}".format(label, count, status)
              for (label, status), count in rows.items()]
    for title, items in (("Problems", report["problems"]), ("Warnings", report["warnings"])):
        if items:
            lines += ["", title + ":"] + ["  - " + item for item in items]
    return "\n".join(lines)


def write_json(report, path):
    """Writes the report as JSON atomically (temp file in the same directory + os.replace)."""
    path = pathlib.Path(path)
    if not path.parent.is_dir():
        raise UserError("--json {}: directory {} does not exist".format(path, path.parent))
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        os.replace(tmp, str(path))
    except BaseException:
        os.unlink(tmp)
        raise


def add_arguments(parser):
    parser.add_argument("model", metavar="FILE.tflite", type=arguments.input_file, help="the .tflite to check")
    parser.add_argument("--json", metavar="OUT", default=None, type=arguments.output_file,
                        help="also write the report as JSON to OUT")


def run(args):
    report = preflight(args.model)
    print(format_report(report))
    if args.json:
        write_json(report, args.json)
    return 0
