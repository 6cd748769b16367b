"""One row of the comparison, from what the export wrote and what the int8 file measures.

Accuracy comes from each bundle's own report.json (the fidelity gate's figures), so the table
cannot disagree with the bundles. Size, Edge TPU preflight and CPU latency are measured on
the quantization-aware model_int8.tflite (the post-training one when that export failed):
the two int8 files of one architecture have the same graph.
"""

import os

from training import evaluate
from training.compare import graph, latency
from training.edgetpu.preflight import preflight

LATENCY_INVOKES = 100
PREFLIGHT_KEYS = ("ops_total", "ops_on_tpu", "ops_on_cpu", "subgraphs")


def export_entry(result):
    """The table's view of one export (see model_run._export): passed, why not, the figures."""
    if "failed" in result:
        return {"passed": False, "rejected_by": result["stage"], "reasons": [result["failed"]]}
    rep = result["report"]
    if "fidelity" not in rep:  # refused before the gate: the uint8 file broke a full-integer check
        return {"bundle": result["bundle"], "passed": False, "rejected_by": rep["rejected_by"],
                "reasons": [rep["error"]]}
    fid = rep["fidelity"]
    return {"bundle": result["bundle"], "passed": bool(fid["passed"]),
            "rejected_by": None if fid["passed"] else "fidelity gate", "reasons": fid["reasons"],
            "float": {k: fid["float"][k] for k in ("map", "map50")},
            "int8": {k: fid["int8"][k] for k in ("map", "map50")},
            "ratio": fid["ratio"], "agreement": fid["agreement"], "pr_curve": fid["pr_curve"]}


def int8_measures(path, image_rgb, spec):
    """Graph size, file size, preflight counts and CPU latency of one int8 .tflite."""
    pre = preflight(path)
    return {"model": path, "size": graph.model_size(path), "tflite_bytes": os.path.getsize(path),
            "preflight": dict({k: pre[k] for k in PREFLIGHT_KEYS}, problems=pre["problems"]),
            "cpu_latency_ms": latency.median_invoke_ms(path, image_rgb, spec, LATENCY_INVOKES, 1)}


def _measured_file(entries):
    for entry in entries:
        path = os.path.join(entry.get("bundle") or "", "model_int8.tflite")
        if entry.get("bundle") and os.path.exists(path):
            return path
    return None


def row(model, cfg, qat, ptq, eval_examples, train_seconds):
    """The comparison's row for one model.

    Args:
      model: settings.Model; cfg: the Config the run was trained with.
      qat, ptq: model_run._export results of the quantization-aware and post-training exports.
      eval_examples: the eval split (its first image is the latency input).
      train_seconds: wall time of the training, or None when it was trained before.
    """
    m = cfg.model
    entries = {"qat": export_entry(qat), "ptq": export_entry(ptq)}
    path = _measured_file([entries["qat"], entries["ptq"]])
    measures = None
    if path:
        measures = int8_measures(path, evaluate.decode_image(eval_examples[0]), evaluate.spec_from_config(cfg))
    return dict({"name": model.name, "config": model.path,
                 "architecture": {"feature_extractor": m.feature_extractor, "use_depthwise": m.use_depthwise,
                                  "box_predictor_kernel_size": m.box_predictor_kernel_size,
                                  "input": [m.input_height, m.input_width], "depth_multiplier": m.depth_multiplier},
                 "steps": cfg.train.steps, "quantization_delay": cfg.train.quantization.delay,
                 "train_seconds": train_seconds, "int8": measures}, **entries)
