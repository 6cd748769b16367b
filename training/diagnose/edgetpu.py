"""Findings from the Edge TPU preflight of the quantized model (training/edgetpu/preflight.py).

float_ops_remaining, dynamic_shape and batch_not_one stop edgetpu_compiler from
mapping the model (errors); edgetpu_partition says how much of it would run on the
CPU (a warning: it works, slower).
"""

from training import tflite_model
from training.diagnose.findings import finding
from training.edgetpu import preflight

# The CPU post-processing tail of an OD-API-style model: the converter dequantizes the heads
# into the float TFLite_Detection_PostProcess op (and re-quantizes its outputs when asked for
# integer outputs). Every Coral SSD runs that op on the CPU by design: not a conversion error.
POSTPROCESS_TAIL_OPS = ("DEQUANTIZE", "QUANTIZE", "TFLite_Detection_PostProcess")


def _problem(report, words):
    return next((p for p in report["problems"] if all(w in p for w in words)), None)


def edgetpu_findings(quant_path, quant_interp=None):
    """Findings from `preflight.preflight(quant_path)`; returns (findings, report).

    Args:
      quant_path: the quantized .tflite.
      quant_interp: its allocated Interpreter; with it, float tensors that only feed the
        TFLite_Detection_PostProcess tail are not reported as float_ops_remaining.
    """
    report = preflight.preflight(quant_path)
    findings = []
    floats = _problem(report, ("float tensor",))
    if floats and quant_interp is not None and \
            not tflite_model.float_ops(quant_interp, report["ops_total"], POSTPROCESS_TAIL_OPS):
        floats = None  # only the post-processing tail is float: it runs on the CPU by design
    if floats:
        findings.append(finding(
            "float_ops_remaining", "error", "float ops remain in the quantized model", floats + ".",
            "convert full-integer: converter.optimizations = [tf.lite.Optimize.DEFAULT], a "
            "representative_dataset, target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8], "
            "inference_input_type = inference_output_type = tf.uint8"))
    dynamic = _problem(report, ("dynamic shape",))
    if dynamic:
        findings.append(finding(
            "dynamic_shape", "error", "the model has dynamic shapes", dynamic + ".",
            "export with a fixed input signature, tf.TensorSpec([1, H, W, 3], tf.float32), before converting"))
    batch = [t for t in report["inputs"] if t["shape"] and t["shape"][0] != 1]
    if batch:
        findings.append(finding(
            "batch_not_one", "error", "input batch is {}, the Edge TPU needs 1".format(batch[0]["shape"][0]),
            "Input '{}' has shape {}.".format(batch[0]["name"], batch[0]["shape"]),
            "export with a batch-1 signature, tf.TensorSpec([1, H, W, 3], tf.float32)"))
    findings.extend(_partition(report))
    return findings, report


def _partition(report):
    if not report["ops_on_cpu"] or not report["ops_on_tpu"]:
        return []
    first = report["cpu_ops"][0]
    ops = sorted({e["op"] for e in report["cpu_ops"]})
    return [finding(
        "edgetpu_partition", "warning",
        "{} of {} ops would run on the CPU, from op #{} {} on".format(
            report["ops_on_cpu"], report["ops_total"], first["index"], first["op"]),
        "Predicted Edge TPU mapping: {} ops on the Edge TPU, {} on the CPU ({}). The first unmapped op is "
        "#{} {}: {}.".format(report["ops_on_tpu"], report["ops_on_cpu"], ", ".join(ops), first["index"],
                             first["op"], first["reason"]),
        "replace or move op #{} {} (see `edgedet-train preflight {}` for every op), or accept CPU time "
        "for the ops after it".format(first["index"], first["op"], report["model"]),
        {"ops_total": report["ops_total"], "ops_on_tpu": report["ops_on_tpu"],
         "ops_on_cpu": report["ops_on_cpu"], "first_cpu_op": first})]
