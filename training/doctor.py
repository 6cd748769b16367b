"""`edgedet-train doctor`: says why a quantized model is broken, and what to change.

    edgedet-train doctor --float F --quant Q --images DIR [--json OUT] [--float-range LO,HI]

F is a bundle folder (model.json names both files and the float range), a
SavedModel or a float .tflite; Q is the quantized .tflite. Both models run on the
images, the float one fed its expected range (model.json, else --float-range,
else estimated), the quantized one fed what a deployment feeds it (raw pixels for
a uint8 input). The findings (training/diagnose/) are ranked causes first; the
first line printed names the top cause and its fix. Exit 1 if any finding is an
error, 0 otherwise, 2 for bad input.
"""

import os

import numpy as np

from app import arguments
from app.model import preprocess
from app.errors import UserError
from training.diagnose import detections, edgetpu, findings, inputs, layers, outputs
from training.diagnose import float_range as range_estimation
from training.diagnose.pair import is_float_model, load_pair, parse_float_range, raw_output_names
from training.diagnose.runner import dequantized

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CONFIRM_IMAGES = 4
REJECTED_IMAGES = 8  # eval images the doctor runs on when export rejects a bundle
DOCTOR_JSON, DOCTOR_TEXT = "doctor.json", "doctor.txt"


def load_images(folder, limit):
    """RGB uint8 images from `folder` (sorted by name, at most `limit`, None = all); UserError if none."""
    import cv2
    if not os.path.isdir(folder):
        raise UserError("--images {}: no such folder; pass a folder of .jpg/.png images like the "
                        "ones the model will see".format(folder))
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))[:limit]
    images = []
    for name in names:
        bgr = cv2.imread(os.path.join(folder, name), cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError("--images: {} cannot be decoded; remove it or replace it".format(
                os.path.join(folder, name)))
        images.append(preprocess.bgr_to_rgb(bgr))
    if not images:
        raise UserError("--images {}: no {} files in it".format(folder, "/".join(IMAGE_EXTENSIONS)))
    return images


def resolve_float_range(pair, images):
    """(float range, how it was found): model.json, --float-range, the float model's own
    uint8 input, or estimated (detectors only; [-1, 1] otherwise, said so)."""
    if pair.float_range is not None:
        return pair.float_range, pair.range_source
    if not is_float_model(pair.float_model):
        interval = inputs.quant_input_interval(pair.float_model)
        return (interval[0], interval[1]), "the --float model's own input quantization"
    if pair.kind == "generic":
        return preprocess.INPUT_RANGE, "assumed (not a detector, cannot estimate; pass --float-range)"
    names = raw_output_names(pair) if pair.kind == "raw_ssd" else None
    best, scores = range_estimation.estimate(pair, images, names)
    table = ", ".join("{} {:.2f}".format(k, v) for k, v in scores.items())
    return best, "estimated (confidence x stability: {}); pass --float-range to set it".format(table)


def run_all(runner, images, float_range):
    """{output name: [Output per image]} of one model."""
    gathered = {name: [] for name in runner.output_names}
    for image in images:
        for name, out in runner.run(image, float_range).items():
            gathered[name].append(out)
    return gathered


def _flat(outputs, names, count):
    return np.concatenate([dequantized(outputs[n][i]).ravel() for n in names for i in range(count)])


def _relative_error(values, reference):
    """RMS(values - reference) / RMS(reference)."""
    return float(np.sqrt(np.mean((values - reference) ** 2)) / (np.sqrt(np.mean(reference ** 2)) + 1e-9))


def confirm_input_interval(pair, images, float_range, float_out, quant_out):
    """Relative error of the quantized outputs against the float model fed the interval the
    input quantization implies, and against it fed `float_range`; None if not measurable."""
    found = inputs.quant_input_interval(pair.quant_model)
    if found is None or not is_float_model(pair.float_model):
        return None
    implied = (found[0], found[1])
    count = min(CONFIRM_IMAGES, len(images))
    implied_out = run_all(pair.float_model, images[:count], implied)
    f_names = [f for f, _ in pair.output_pairs]
    q = _flat(quant_out, [q for _, q in pair.output_pairs], count)
    return (_relative_error(q, _flat(implied_out, f_names, count)),
            _relative_error(q, _flat(float_out, f_names, count)))


def _detection_findings(pair, float_out, quant_out):
    if pair.kind == "raw_ssd":
        names = raw_output_names(pair)
        decoded = detections.decode_raw(pair.spec, names, float_out, quant_out)
        logit_q = quant_out[names["class_logits"][1]][0].quantization
        num_classes = int(quant_out[names["class_logits"][1]][0].values.shape[-1])
    elif pair.kind == "postprocess":
        decoded = detections.decode_postprocess(pair, float_out, quant_out)
        logit_q, num_classes = None, 1 + max([int(c) for d in decoded.float_dets for c in d.class_ids] or [0])
    else:
        return []
    found = outputs.score_collapse(decoded.float_top, decoded.quant_top, logit_q)
    found += detections.box_drift(decoded.float_boxes, decoded.quant_boxes)
    found += detections.detection_disagreement(decoded, num_classes)
    if pair.kind == "postprocess":
        found += detections.class_index_quantized(pair.quant_model)
    return found


def diagnose(pair, images):
    """All findings for a loaded pair on the images.

    Args:
      pair: diagnose.pair.Pair.
      images: list of RGB uint8 [H, W, 3] images.

    Returns:
      (ranked findings, report dict for --json without the findings).
    """
    float_range, source = resolve_float_range(pair, images)
    float_out = run_all(pair.float_model, images, float_range)
    quant_out = run_all(pair.quant_model, images, float_range)
    found = []
    interval = inputs.quant_input_interval(pair.quant_model)
    confirmation = None
    if interval is not None and not inputs.matches_range(interval[:2], float_range):
        confirmation = confirm_input_interval(pair, images, float_range, float_out, quant_out)
    found += inputs.input_findings(pair.quant_model, float_range, confirmation)
    tpu_findings, preflight_report = edgetpu.edgetpu_findings(pair.quant_path,
                                                                 pair.quant_model.interp)
    found += tpu_findings
    logits = [raw_output_names(pair)["class_logits"][1]] if pair.kind == "raw_ssd" else []
    found += outputs.output_saturation(quant_out, float_out, pair.output_pairs, logits)
    found += _detection_findings(pair, float_out, quant_out)
    found += layers.layer_error_blowup(layers.relative_errors(pair, images[0], float_range))
    report = {"float": str(pair.float_label), "quant": str(pair.quant_path), "kind": pair.kind,
              "float_range": list(float_range), "float_range_source": source, "images": len(images),
              "preflight": preflight_report}
    return findings.rank(found), report


def context_lines(report):
    return ["float {} vs quantized {} ({} model), {} image(s)".format(
                report["float"], report["quant"], report["kind"], report["images"]),
            "float model fed [{:g}, {:g}]: {}".format(report["float_range"][0], report["float_range"][1],
                                                      report["float_range_source"])]


def write_for_bundle(bundle_dir, images_rgb):
    """Diagnoses a bundle's float/int8 pair; writes doctor.json and doctor.txt into it.

    Export calls this on a bundle the fidelity gate rejected, so report.html can say why.

    Args:
      bundle_dir: folder with model.json, model_float.tflite and model_int8.tflite.
      images_rgb: non-empty list of RGB uint8 [H, W, 3] eval images (REJECTED_IMAGES is plenty).

    Returns:
      {"headline": str, "json": DOCTOR_JSON, "text": DOCTOR_TEXT, "has_error": bool}.
    """
    if not images_rgb:
        raise ValueError("images_rgb must hold at least one image, got none")
    from training.bundle_writer import write_json_atomic, write_text_atomic
    ranked, report = diagnose(load_pair(bundle_dir, None), images_rgb)
    line = findings.headline(ranked)
    write_json_atomic(os.path.join(bundle_dir, DOCTOR_JSON), dict({"findings": ranked, "headline": line},
                                                                  **report))
    write_text_atomic(os.path.join(bundle_dir, DOCTOR_TEXT),
                      findings.format_text(ranked, context_lines(report)) + "\n")
    return {"headline": line, "json": DOCTOR_JSON, "text": DOCTOR_TEXT, "has_error": findings.has_error(ranked)}


def _float_range_text(text):
    """argparse type: --float-range checked while parsing, kept as text for load_pair."""
    parse_float_range(text)
    return text


def add_arguments(parser):
    parser.add_argument("--float", dest="float_model", required=True, metavar="F", type=arguments.input_path,
                        help="float .tflite, SavedModel folder, or bundle folder (model.json)")
    parser.add_argument("--quant", metavar="Q", type=arguments.input_file,
                        help="quantized .tflite (default: the bundle's int8 model)")
    parser.add_argument("--images", required=True, metavar="DIR", type=arguments.input_dir,
                        help="folder of images to run both on")
    parser.add_argument("--json", metavar="OUT", type=arguments.output_file,
                        help="also write {\"findings\": [...], ...} to OUT")
    parser.add_argument("--float-range", metavar="LO,HI", type=_float_range_text,
                        help="input range the float model expects, e.g. --float-range=-1,1 (default: "
                             "model.json, else estimated)")
    parser.add_argument("--max-images", type=arguments.integer(1, 10 ** 6), default=16,
                        help="use at most this many images")


def run(args):
    images = load_images(args.images, args.max_images)
    pair = load_pair(args.float_model, args.quant, args.float_range)
    ranked, report = diagnose(pair, images)
    print(findings.format_text(ranked, context_lines(report)))
    if args.json:
        from training.bundle_writer import write_json_atomic
        write_json_atomic(args.json, dict({"findings": ranked, "headline": findings.headline(ranked)},
                                          **report))
    return 1 if findings.has_error(ranked) else 0
