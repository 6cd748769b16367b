"""Findings about the quantized outputs themselves: clipped values and collapsed scores.

Both read the outputs gathered over all images: {name: list of runner.Output}.
"""

import numpy as np

from training.diagnose.findings import finding
from training.diagnose.runner import dequantized

# Share of an output's extreme tail clipped at a code limit. Learned (QAT) and calibrated
# ranges clip the rarest extremes on purpose: the committed demo bundle's int8 model (agreement
# 1.00 with its float twin) clips 20% of its box_encodings tail, measured; blank-frame
# calibration clips 59% of the class-logit tail and turns every detection's score into 0.5.
SATURATION_WARN, SATURATION_ERROR = 0.3, 0.45
TAIL = 0.005  # each end: the float model's highest / lowest 0.5% of an output's values
MID_SCORE = (0.4, 0.6)  # sigmoid(logit ~ 0): scores a collapsed model piles up in
COLLAPSE_SHARE = 0.5
CONFIDENT = 0.5  # float score of an anchor the float model calls an object (logit > 0)
MIN_CONFIDENT = 3  # fewer confident anchors than this: no evidence either way


def _limits(dtype):
    info = np.iinfo(dtype)
    return info.min, info.max


def _tail_clipped(values, low, high, upper_only=False):
    """Share of the float values' extreme TAIL (each end) that lies past [low, high].

    The extremes are what matter (the confident logits, the large box offsets) and they
    are a tiny share of all values (thousands of background anchors), so the share is
    taken within each tail. Codes at the limits that the float values do not go past are
    not clipping: a 3-class id output sits at codes 0 and 255 for classes 0 and 2.
    """
    count = max(1, int(round(TAIL * values.size)))
    ordered = np.sort(values)
    upper = float(np.mean(ordered[-count:] > high))
    return upper if upper_only else max(float(np.mean(ordered[:count] < low)), upper)


def output_saturation(quant_outputs, float_outputs, pairs, upper_only=()):
    """output_saturation: integer outputs whose quantized range clips the float extremes.

    Args:
      quant_outputs, float_outputs: {name: [Output per image]}.
      pairs: [(float name, quant name)].
      upper_only: quant names of score logits, where only the high end matters: clipping a
        logit of -20 to -12 leaves its score at ~0 (QAT ranges do it on purpose).

    Returns:
      list with at most one finding (the worst output), severity by the share of the float
      values' extreme tail that the quantized range clips (see _tail_clipped).
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
        # Within half a code step of a limit a value rounds to that code anyway: rounding, not
        # clipping (a box edge at -0.0048 on a [-0.0039, 1.0] output is not saturation).
        cut_lo, cut_hi = real_lo - 0.5 * scale, real_hi + 0.5 * scale
        beyond = float(np.mean((fv < cut_lo) | (fv > cut_hi)))
        clipped = _tail_clipped(fv, cut_lo, cut_hi, q_name in upper_only)
        if worst is None or clipped > worst[0]:
            worst = (clipped, q_name, share, beyond, (real_lo, real_hi), (float(fv.min()), float(fv.max())))
    if worst is None or worst[0] < SATURATION_WARN:
        return []
    clipped, name, share, beyond, (real_lo, real_hi), (f_lo, f_hi) = worst
    return [finding(
        "output_saturation", "error" if clipped >= SATURATION_ERROR else "warning",
        "output '{}' clips {:.0%} of its extreme values at the ends of its quantized range".format(
            name, clipped),
        "Output '{}' can represent [{:.4g}, {:.4g}]; the float model's values on the same images span "
        "[{:.4g}, {:.4g}], and {:.0%} of its most extreme {:.1%} (each end) fall outside, {:.2%} of all "
        "values ({:.2%} of the quantized values sit at code min or max). The calibration saw a narrower "
        "range than these images produce: those are the confident logits / large offsets that "
        "matter.".format(name, real_lo, real_hi, f_lo, f_hi, clipped, TAIL, beyond, share),
        "calibrate on more and more varied images, preprocessed exactly as at inference (a few hundred "
        "from the training set), or convert with inference_output_type = tf.float32",
        {"output": name, "tail_clipped": clipped, "share_at_limits": share, "float_share_outside": beyond,
         "quantized_range": [real_lo, real_hi], "float_range": [f_lo, f_hi]})]


def _mid_share(scores):
    scores = np.asarray(scores, np.float64).ravel()
    return float(np.mean((scores >= MID_SCORE[0]) & (scores <= MID_SCORE[1]))) if scores.size else 0.0


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))


def score_collapse(float_scores, quant_scores, logit_quantization=None):
    """score_collapse: where the float model is confident, quantized scores piled up near 0.5.

    Only the anchors the float model scores >= CONFIDENT count: those are the detections,
    and a model whose logits were clipped or quantized to ~0 turns exactly them into ~0.5
    (a share over all top anchors is diluted by the many weak ones).

    Args:
      float_scores, quant_scores: float arrays [M], the two models' scores on the same M
        anchors or matched detections (see detections.Decoded).
      logit_quantization: (scale, zero_point) of the quantized logits output, if any.

    Returns:
      list with at most one finding.
    """
    float_scores = np.asarray(float_scores, np.float64).ravel()
    quant_scores = np.asarray(quant_scores, np.float64).ravel()
    if float_scores.shape != quant_scores.shape:
        raise ValueError("float and quantized scores must pair up, got shapes {} and {}".format(
            float_scores.shape, quant_scores.shape))
    confident = float_scores >= CONFIDENT
    share_q, share_f = _mid_share(quant_scores[confident]), _mid_share(float_scores[confident])
    if confident.sum() < MIN_CONFIDENT or share_q < COLLAPSE_SHARE or share_q < 2 * share_f:
        return []
    detail = ("On the {} anchors the float model scores >= {}, {:.0%} of the quantized scores lie in "
              "[{}, {}] against {:.0%} of the float ones: the quantized logits of real objects sit at "
              "about 0 (clipped or too coarse), so sigmoid gives ~0.5 whatever the object."
              .format(int(confident.sum()), CONFIDENT, share_q, MID_SCORE[0], MID_SCORE[1], share_f))
    evidence = {"quant_mid_share": share_q, "float_mid_share": share_f,
                "confident_anchors": int(confident.sum())}
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
