"""The fidelity gate: a uint8 model ships only if it matches its float twin on the eval split.

Both .tflite files run through the app's path (app.model.preprocess, app.model.postprocess.decode_ssd).
mAP uses the low eval score threshold; agreement uses the app's live thresholds,
because that is what a user would see on the device.
"""

import numpy as np

from app.check.agreement import pooled_agreement
from app.model.postprocess import Detections
from training import evaluate


def live_detections(dets, score_threshold, max_detections):
    """What the app would show: detections with score >= threshold, at most `max_detections`.

    Greedy NMS keeps a box only because of higher-scoring boxes, so filtering eval
    (low-threshold) detections by score equals decoding at the live threshold.
    """
    keep = np.nonzero(np.asarray(dets.scores) >= score_threshold)[0][:max_detections]
    return Detections(dets.boxes[keep], dets.scores[keep], dets.class_ids[keep])


def gate(float_map, int8_map, agreement, max_drop, min_agreement):
    """Decides the gate; returns (passed, list of one-line reasons it failed).

    Args:
      float_map, int8_map: COCO mAP@[.5:.95] of the two models.
      agreement: pooled detection agreement at live thresholds, 0..1.
      max_drop: largest allowed relative mAP drop, e.g. 0.02.
      min_agreement: least agreement (the app's reference.min_agreement: a model the app
        would reject at run time is not worth shipping).
    """
    if not 0.0 <= max_drop < 1.0:
        raise ValueError("max_drop must be in [0, 1), got {!r}".format(max_drop))
    reasons = []
    if float_map <= 0.0:
        reasons.append("the float model has mAP 0 on the eval split: nothing to be faithful to; "
                       "train longer or check the eval data")
    need = (1.0 - max_drop) * float_map
    if int8_map < need:
        reasons.append("int8 mAP {:.4f} < (1 - {:g}) x float mAP {:.4f} = {:.4f}".format(
            int8_map, max_drop, float_map, need))
    if agreement < min_agreement:
        reasons.append("int8 vs float detection agreement {:.3f} < {:.3f}".format(agreement, min_agreement))
    return not reasons, reasons


def _summary(metrics):
    return {k: metrics[k] for k in ("map", "map50", "per_class", "num_detections")}


def measure(float_path, int8_path, examples, spec, cfg, max_drop, float_outputs=None, int8_outputs=None):
    """Evaluates both models on `examples` and applies the gate.

    Args:
      float_path, int8_path: the .tflite files.
      examples: eval Examples (ground truth + encoded images).
      spec: evaluate.ModelSpec or app.model.bundle.Bundle.
      cfg: training Config (eval thresholds, postprocess, reference.min_agreement).
      max_drop: allowed relative mAP drop.
      float_outputs, int8_outputs: optional output tensor-name maps (from model.json).

    Returns:
      (result dict for model.json/report.json, float Detections list, int8 Detections list).
    """
    kwargs = evaluate.eval_decode_kwargs(cfg)
    preds_f = evaluate.predict_tflite(float_path, examples, spec, kwargs, float_outputs)
    preds_q = evaluate.predict_tflite(int8_path, examples, spec, kwargs, int8_outputs)
    num_classes = len(cfg.model.labels)
    m_f = evaluate.coco_metrics(examples, preds_f, num_classes)
    m_q = evaluate.coco_metrics(examples, preds_q, num_classes)
    pp = cfg.postprocess
    agree = pooled_agreement([live_detections(d, pp.score_threshold, pp.max_detections) for d in preds_f],
                             [live_detections(d, pp.score_threshold, pp.max_detections) for d in preds_q])
    passed, reasons = gate(m_f["map"], m_q["map"], agree, max_drop, cfg.reference.min_agreement)
    result = {"float": _summary(m_f), "int8": _summary(m_q),
              "ratio": m_q["map"] / m_f["map"] if m_f["map"] > 0 else None,
              "ratio50": m_q["map50"] / m_f["map50"] if m_f["map50"] > 0 else None,
              "agreement": agree, "max_drop": max_drop, "min_agreement": cfg.reference.min_agreement,
              "num_images": len(examples), "passed": passed, "reasons": reasons,
              "pr_curve": {"float": m_f["pr_curve"], "int8": m_q["pr_curve"]}}
    return result, preds_f, preds_q


def failure_message(result, rejected_dir):
    """The printout of a failed gate: both numbers, why, where the model went, what to run."""
    return ("fidelity gate FAILED: float mAP {:.4f} (mAP@0.5 {:.4f}), int8 mAP {:.4f} (mAP@0.5 {:.4f}), "
            "agreement {:.3f}.\n  {}\nThe model was NOT written to --out; it is in {} with its report.\n"
            "Diagnose it with `edgedet-train doctor` (it compares the pair and checks the calibration)."
            .format(result["float"]["map"], result["float"]["map50"], result["int8"]["map"],
                    result["int8"]["map50"], result["agreement"], "\n  ".join(result["reasons"]),
                    rejected_dir))
