"""Findings about the quantized outputs themselves: clipped values and collapsed scores.

Both read the outputs gathered over all images: {name: list of runner.Output}.
"""

import numpy as np

from training.diagnose.findings import finding
from training.diagnose.runner import dequantized

SATURATION_WARN, SATURATION_ERROR = 0.05, 0.25  # share of values stuck at a code limit
MID_SCORE = (0.4, 0.6)  # sigmoid(logit ~ 0): scores a collapsed model piles up in
COLLAPSE_SHARE = 0.5


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def output_saturation(quant_outputs, float_outputs, pairs):
    """output_saturation: integer outputs whose values sit at the ends of their code range.

    Args:
      quant_outputs, float_outputs: {name: [Output per image]}.
      pairs: [(float name, quant name)].

    Returns:
      list with at most one finding (the worst output), severity by the share clipped:
      min(share of codes at a limit, share of float values beyond the representable range).
    """
    worst = None
    for f_name, q_name in pairs:
        outs = quant_outputs[q_name]
        values = np.concatenate([np.asarray(o.values).ravel() for o in outs])
        if values.dtype.kind not in "iu" or outs[0].quantization is None:
            continue
        lo, hi = _limits(values.dtype)
        share = float(np.mean((values == lo) | (values == hi)))
        scale, zero = outs[0].quantization
        real_lo, real_hi = (lo - zero) * scale, (hi - zero) * scale
        fv = np.concatenate([dequantized(o).ravel() for o in float_outputs[f_name]])
        beyond = float(np.mean((fv < real_lo) | (fv > real_hi)))
        # Codes at the limits are clipping only where the float values go past them: a class-id
        # output of a 3-class model sits at codes 0 and 255 for classes 0 and 2, legitimately.
        clipped = min(share, beyond)
        if worst is None or clipped > worst[0]:
            worst = (clipped, q_name, share, beyond, (real_lo, real_hi), (float(fv.min()), float(fv.max())))
    if worst is None or worst[0] < SATURATION_WARN:
        return []
    clipped, name, share, beyond, (real_lo, real_hi), (f_lo, f_hi) = worst
    return [finding(
        "output_saturation", "error" if clipped >= SATURATION_ERROR else "warning",
        "{:.0%} of output '{}' is stuck at the ends of its uint8 range".format(share, name),
        "Output '{}' can represent [{:.4g}, {:.4g}]; {:.1%} of its values are at code min or max. The float "
        "model's values on the same images span [{:.4g}, {:.4g}] ({:.1%} outside the quantized range): "
        "the calibration saw a narrower range than these images produce.".format(
            name, real_lo, real_hi, share, f_lo, f_hi, beyond),
        "calibrate on more and more varied images, preprocessed exactly as at inference (a few hundred "
        "from the training set), or convert with inference_output_type = tf.float32",
        {"output": name, "share_at_limits": share, "float_share_outside": beyond,
         "quantized_range": [real_lo, real_hi], "float_range": [f_lo, f_hi]})]


def _mid_share(scores):
    scores = np.asarray(scores, np.float64).ravel()
    return float(np.mean((scores >= MID_SCORE[0]) & (scores <= MID_SCORE[1]))) if scores.size else 0.0


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def score_collapse(float_scores, quant_scores, logit_quantization=None):
    """score_collapse: quantized scores piled up near 0.5 where the float ones are not.

    Args:
      float_scores, quant_scores: float arrays of the scores that matter (each model's
        top candidates; see detections.top_scores), equal length.
      logit_quantization: (scale, zero_point) of the quantized logits output, if any.

    Returns:
      list with at most one finding.
    """
    share_q, share_f = _mid_share(quant_scores), _mid_share(float_scores)
    if share_q < COLLAPSE_SHARE or share_q < 2 * share_f:
        return []
    detail = ("{:.0%} of the quantized model's top scores lie in [{}, {}] against {:.0%} of the float "
              "model's: logits are quantized to about 0, so sigmoid gives ~0.5 whatever the image."
              .format(share_q, MID_SCORE[0], MID_SCORE[1], share_f))
    evidence = {"quant_mid_share": share_q, "float_mid_share": share_f}
    if logit_quantization is not None:
        scale, zero = logit_quantization
        detail += (" The logits output has scale {:.4g} (zero point {}): one code step is {:.3g} logits, "
                   "scores between {:.2f} and {:.2f} are one step apart.".format(
                       scale, zero, scale, _sigmoid(-scale), _sigmoid(scale)))
        evidence["logit_scale"], evidence["logit_zero_point"] = scale, zero
    return [finding(
        "score_collapse", "error", "scores collapsed to ~0.5 (logits quantized to ~0)", detail,
        "fix the calibration range first (see calibration_input_range); if it is right, calibrate on "
        "images with objects in them, or keep the logits float (inference_output_type = tf.float32)",
        evidence)]
