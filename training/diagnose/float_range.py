"""Which float range the float model expects, when nothing says so: try the usual ones.

A detector fed its own normalization gives confident detections that survive a
small change in lighting and that differ from image to image. Fed the wrong one,
it gives few or weak detections, boxes that jump around, or (saturated by a range
far too wide) the same confident boxes on every image. Each candidate range is
scored by mean top score x agreement with a slightly darker copy of each image
x (1 - agreement between different images) x share of images not filled to the cap.
"""

import numpy as np

from app.check.agreement import pooled_agreement
from app.model.postprocess import decode_postprocess_outputs, decode_ssd

CANDIDATES = ((-1.0, 1.0), (0.0, 1.0), (0.0, 255.0))
MAX_IMAGES = 8
MAX_DETECTIONS = 20
TOP = 5


def _perturbed(image_rgb):
    """The same scene 10% darker: a detector should not change its mind."""
    return np.clip(image_rgb.astype(np.float32) * 0.9, 0, 255).astype(np.uint8)


def _detect(pair, image_rgb, float_range, names):
    """(Detections at a low threshold, top-TOP mean score) of the float model on one image."""
    from training.diagnose.runner import dequantized
    outputs = pair.float_model.run(image_rgb, float_range)
    if pair.kind == "raw_ssd":
        codes = dequantized(outputs[names["box_encodings"][0]]).reshape(-1, 4)
        logits = dequantized(outputs[names["class_logits"][0]]).reshape(len(codes), -1)
        spec = pair.spec
        dets = decode_ssd(codes, logits, spec.anchors, spec.box_coder_scales, spec.score_converter,
                          score_threshold=0.3, max_detections=MAX_DETECTIONS)
    else:
        details = pair.float_model.interp.get_output_details()
        by_tensor = {o.tensor: o.values for o in outputs.values()}
        dets = decode_postprocess_outputs(details, [by_tensor[d["name"]] for d in details],
                                          score_threshold=0.3, max_detections=MAX_DETECTIONS)
    top = float(np.mean(dets.scores[:TOP])) if len(dets.scores) else 0.0
    return dets, top


def score_range(pair, images, float_range, names=None):
    """Confidence x stability of the float model under `float_range`, in [0, 1]."""
    plain, darker, tops = [], [], []
    for image in images[:MAX_IMAGES]:
        dets, top = _detect(pair, image, float_range, names)
        plain.append(dets)
        tops.append(top)
        darker.append(_detect(pair, _perturbed(image), float_range, names)[0])
    if not any(len(d.scores) for d in plain):
        return 0.0
    same_everywhere = pooled_agreement(plain, plain[1:] + plain[:1]) if len(plain) > 1 else 0.0
    # A saturated model fills every image up to the cap; real scenes rarely do.
    not_full = float(np.mean([len(d.scores) < MAX_DETECTIONS for d in plain]))
    return float(np.mean(tops)) * pooled_agreement(plain, darker) * (1.0 - same_everywhere) * not_full


def estimate(pair, images, names=None):
    """Picks the candidate range with the best score.

    Args:
      pair: diagnose.pair.Pair of kind "raw_ssd" or "postprocess".
      images: list of RGB uint8 images.
      names: raw output names for raw_ssd (pair.raw_output_names).

    Returns:
      (best (low, high), {"[lo, hi]": score} for every candidate).
    """
    scores = {c: score_range(pair, images, c, names) for c in CANDIDATES}
    best = max(CANDIDATES, key=lambda c: (scores[c], c == CANDIDATES[0]))
    return best, {"[{:g}, {:g}]".format(*c): s for c, s in scores.items()}
