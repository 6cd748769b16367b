"""`edgedet-train convert-savedmodel`: an OD API TFLite SavedModel -> a checked uint8 model.

Takes the SavedModel that the OD API's `export_tflite_graph_tf2.py` writes (input `input`,
float32 [1, H, W, 3] already normalized to [-1, 1]; outputs from TFLite_Detection_PostProcess)
and converts it the way the user's own conversion should have:
  * calibration images stretched to H x W and normalized by `app.model.preprocess` (the user's
    failure was calibrating on raw 0..255 floats);
  * uint8 input whose quantization maps raw pixels onto [-1, 1], int8 body, float32
    post-processing outputs (integer class outputs get truncated to the wrong class);
  * with --pipeline, the op's NMS set to the pipeline's post_processing (per-class NMS, as
    the OD API's own model; the exporter's default is fast NMS with 10 detections), see
    training.postprocess_options.
Then the float .tflite of the same SavedModel is the reference: both run on --images (the
calibration images: a user may have no labelled set), and the int8 model is gated on its
detection agreement with the float one and on COCO mAP@0.5 of int8 detections measured
against the float detections as pseudo ground truth.

Writes <out>/ atomically: model_int8_postprocess.tflite, model_float_postprocess.tflite,
labels.txt, model.json ("kind": "postprocess"), report.json, saved_model/ (the SavedModel as
converted, with the op options it was converted with). The app runs the folder,
`python -m app --model <out>`: the int8 model live with the bundle's labels, checked against the
float model (app.model.postprocess_bundle).

Exit codes: 0 written, 1 rejected by a check or the gate, 2 bad input (nothing written).
"""

import collections
import datetime
import os
import shutil

import numpy as np

from app import arguments
from app.model import preprocess
from app.config import ReferenceConfig
from app.errors import UserError
from app.model.labels import read_labels
from app.inference.workers import FOREIGN_DEFAULTS  # the app's thresholds for models ending in post-processing
from training import bundle_writer, fidelity
from training.export import EXIT_REJECTED, NUM_SAMPLES

INT8_FILE = "model_int8_postprocess.tflite"
FLOAT_FILE = "model_float_postprocess.tflite"
MIN_IMAGES = 10
# The app would reject a model below the reference check's agreement at run time.
MIN_AGREEMENT = ReferenceConfig().min_agreement

# Float detections standing in for ground truth in training.evaluate.coco_metrics.
PseudoTruth = collections.namedtuple("PseudoTruth", "height width boxes classes")


def add_arguments(parser):
    parser.add_argument("--saved-model", required=True, type=arguments.input_dir,
                        help="SavedModel from OD API export_tflite_graph_tf2.py (input 'input', [-1, 1])")
    parser.add_argument("--images", required=True, type=arguments.input_dir,
                        help="folder of images like the deployment (>= 100 best)")
    parser.add_argument("--out", required=True, type=arguments.output_dir,
                        help="bundle directory to write, e.g. models/mine")
    parser.add_argument("--labels", type=arguments.input_file,
                        help="label file (OD API label_map.pbtxt, Coral 'id name', 'id: name' or one name per line)")
    parser.add_argument("--pipeline", type=arguments.input_file,
                        help="the OD API pipeline.config of the model: the converted model gets its "
                             "post_processing NMS (per-class) instead of the export's fast NMS")
    parser.add_argument("--max-drop", type=arguments.number(0, 1, high_open=True), default=0.02,
                        help="largest allowed relative int8 mAP drop against the float model (default 0.02)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle (atomically)")


def input_size(saved_model_dir):
    """(height, width) of an OD API TFLite SavedModel, after checking its serving signature.

    Raises:
      UserError: not a SavedModel, or the signature is not input `input` float32 [1, H, W, 3].
    """
    import tensorflow as tf
    where = "--saved-model {}".format(saved_model_dir)
    if not os.path.isdir(saved_model_dir):
        raise UserError("{}: no such folder; pass the saved_model/ folder export_tflite_graph_tf2.py wrote"
                        .format(where))
    if not os.path.isfile(os.path.join(saved_model_dir, "saved_model.pb")):
        raise UserError("{}: not a SavedModel (no saved_model.pb); pass the saved_model/ folder that "
                        "export_tflite_graph_tf2.py wrote".format(where))
    try:
        loaded = tf.saved_model.load(saved_model_dir)
    except (OSError, ValueError, tf.errors.OpError) as e:
        raise UserError("{}: cannot load the SavedModel ({}); re-export it".format(
            where, str(e).splitlines()[0] if str(e) else type(e).__name__))
    if "serving_default" not in loaded.signatures:
        raise UserError("{}: no serving_default signature; export it with export_tflite_graph_tf2.py"
                        .format(where))
    fn = loaded.signatures["serving_default"]
    inputs = fn.structured_input_signature[1]
    spec = inputs.get("input")
    shape = spec.shape.as_list() if spec is not None else None
    if (len(inputs) != 1 or spec is None or spec.dtype != tf.float32 or len(shape) != 4 or shape[0] != 1
            or shape[3] != 3 or None in shape or len(fn.structured_outputs) != 4):
        raise UserError("{}: signature serving_default has inputs {} and {} outputs; expected one input "
                        "'input' float32 [1, H, W, 3] and the 4 outputs of TFLite_Detection_PostProcess "
                        "(the SavedModel export_tflite_graph_tf2.py writes)".format(
                            where, {k: "{} {}".format(v.dtype.name, v.shape.as_list())
                                    for k, v in inputs.items()},
                            len(fn.structured_outputs)))
    return int(shape[1]), int(shape[2])


def read_images(folder):
    """RGB uint8 images of a folder (sorted by name); UserError when there are too few."""
    from training.doctor import IMAGE_EXTENSIONS, load_images
    images = load_images(folder, None)
    if len(images) < MIN_IMAGES:
        raise UserError("--images {}: {} images ({}), need at least {} (100+ calibrate better)".format(
            folder, len(images), "/".join(IMAGE_EXTENSIONS), MIN_IMAGES))
    return images


def _labels(given, float_dets):
    """Label names: --labels' (read_labels dict), else class_<id> for every class the float model reported."""
    if given:
        return [given[i] for i in sorted(given)]
    top = max([int(d.class_ids.max()) for d in float_dets if len(d.class_ids)] + [0])
    return ["class_{}".format(i) for i in range(top + 1)]


def compare(float_dets, int8_dets, images, num_classes, max_drop, score_threshold):
    """The gate with the float model as reference (no ground truth needed).

    mAP: every int8 detection (down to the model's own NMS score threshold, so the PR
    curve is complete) against the float detections the app would show (score >=
    `score_threshold`) as pseudo ground truth, via training.evaluate.coco_metrics; the
    float model scores 1.0 against itself. The gate: int8 mAP@0.5 >= 1 - max_drop and
    agreement (app.check.agreement.pooled_agreement of what the app would show from each)
    >= MIN_AGREEMENT.

    Returns:
      dict for model.json/report.json: float, int8 ({map, map50, per_class}), ratio, agreement,
      passed, reasons, ...
    """
    from app.check.agreement import pooled_agreement
    from training import evaluate
    live_f = [fidelity.live_detections(d, score_threshold, len(d.scores)) for d in float_dets]
    live_q = [fidelity.live_detections(d, score_threshold, len(d.scores)) for d in int8_dets]
    truth = [PseudoTruth(img.shape[0], img.shape[1], d.boxes, d.class_ids) for img, d in zip(images, live_f)]
    if not any(len(d.scores) for d in live_f):
        raise UserError("the float model detects nothing on --images, so there is nothing to compare the "
                        "int8 model with; pass images that show the objects it was trained on")
    m_q = evaluate.coco_metrics(truth, int8_dets, num_classes)
    agree = pooled_agreement(live_f, live_q)
    # Gated on mAP@0.5: against float boxes, mAP@[.5:.95] mostly measures sub-pixel
    # quantization jitter (demo, 30 images: 0.972 at mAP@0.5 0.984 and agreement 0.964,
    # where its export measured 0.997 of float mAP against real ground truth).
    passed, reasons = fidelity.gate(1.0, m_q["map50"], agree, max_drop, MIN_AGREEMENT)
    reasons = [r.replace("int8 mAP", "int8 mAP@0.5").replace("float mAP", "float mAP@0.5") for r in reasons]
    return {"reference": "float model detections (pseudo ground truth)",
            "float": {"map": 1.0, "map50": 1.0},
            "int8": {k: m_q[k] for k in ("map", "map50", "per_class", "num_detections")},
            "ratio": m_q["map"], "ratio50": m_q["map50"], "agreement": agree, "max_drop": max_drop,
            "min_agreement": MIN_AGREEMENT, "score_threshold": score_threshold, "num_images": len(images),
            "passed": passed, "reasons": reasons}


def _convert_both(saved_model, images, height, width, folder):
    """Writes the float and int8 .tflite into `folder`; returns their paths (UserError / check error)."""
    from training import convert_tflite, postprocess_model
    paths = {k: os.path.join(folder, name) for k, name in (("float", FLOAT_FILE), ("int8", INT8_FILE))}
    content = postprocess_model.convert(saved_model)
    problems = postprocess_model.check_converted(content, quantized=False)
    if problems:
        raise UserError("--saved-model: its float conversion: {}; expected a model ending in "
                        "TFLite_Detection_PostProcess (export_tflite_graph_tf2.py)".format("; ".join(problems)))
    with open(paths["float"], "wb") as f:
        f.write(content)
    rep = convert_tflite.calibration_inputs(images, height, width, preprocess.INPUT_RANGE)
    content = postprocess_model.convert(saved_model, rep)
    with open(paths["int8"], "wb") as f:
        f.write(content)
    problems = postprocess_model.check_converted(content, preprocess.INPUT_RANGE)
    if problems:
        raise convert_tflite.ConversionCheckError("; ".join(problems))
    return paths


def _exported_options(saved_model):
    """The TFLite_Detection_PostProcess options the export baked in (UserError: there is no such op)."""
    from training import postprocess_options
    exported = postprocess_options.read_options(saved_model)
    if not exported or "num_classes" not in exported:
        raise UserError("--saved-model {}: no function implements {} with num_classes; pass the SavedModel "
                        "export_tflite_graph_tf2.py wrote".format(saved_model, postprocess_options.OP_NAME))
    return exported


def _check_label_count(labels, path, num_classes):
    """UserError unless --labels (a read_labels dict, or None) fits the model's class count."""
    if labels and max(labels) + 1 != num_classes:
        raise UserError("--labels {}: class ids 0..{} ({} labels), but the SavedModel's post-processing has {} "
                        "classes; pass the model's own label file".format(path, max(labels), len(labels),
                                                                          num_classes))


def _op_options(exported, pipeline, ssd, log):
    """Options to set on the SavedModel's TFLite_Detection_PostProcess (empty: keep the export's).

    `ssd` is postprocess_options.read_ssd(pipeline), or None without --pipeline.
    """
    from training import postprocess_options
    if pipeline:
        return postprocess_options.from_pipeline(pipeline, exported["num_classes"], ssd)
    if exported.get("use_regular_nms") is False:
        log("note: the SavedModel's post-processing uses fast NMS (one class per box, {} detections), not the "
            "OD API's per-class NMS; pass --pipeline pipeline.config to convert with the pipeline's NMS".format(
                exported.get("max_detections")))
    return {}


def _stage_savedmodel(saved_model, options, staged):
    """Copies the SavedModel into the staged bundle with `options` set; returns (path, op options)."""
    from training import postprocess_options
    path = os.path.join(staged, "saved_model")
    shutil.copytree(saved_model, path)
    if options:
        postprocess_options.rewrite(path, options)
    return path, postprocess_options.read_options(path)


def _write_samples(folder, images):
    """The first export.NUM_SAMPLES images as PNGs in `folder`/samples (the app's start-up check)."""
    import cv2
    os.makedirs(os.path.join(folder, "samples"))
    names = ["samples/{}.png".format(i) for i in range(min(NUM_SAMPLES, len(images)))]
    for name, rgb in zip(names, images):
        _, data = cv2.imencode(".png", np.ascontiguousarray(rgb[..., ::-1]))
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data.tobytes())
    return names


def _model_json(labels, height, width, int8_path, saved_model, fid, nms, samples):
    from training import convert_tflite
    with open(int8_path, "rb") as f:
        quant = convert_tflite.quantization_params(f.read())["input"]
    return {
        "format_version": bundle_writer.FORMAT_VERSION, "kind": "postprocess",
        "labels": labels,
        "input": {"height": height, "width": width, "color": "RGB", "resize": "stretch",
                  "float_range": list(preprocess.INPUT_RANGE)},
        "postprocess_model": {"file": INT8_FILE, "input_quantization": [quant["scale"], quant["zero_point"]],
                              "nms": nms},
        "float_postprocess_model": {"file": FLOAT_FILE},
        "fidelity": fid,
        "samples": samples,
        "run": "python -m app --model <this folder>",
        "source": {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "converted_from": os.path.abspath(saved_model), "edgedet_version": "0.1.0"},
    }


def convert_savedmodel(saved_model, images_dir, out, labels_path=None, max_drop=0.02, force=False, pipeline=None,
                       log=print):
    """Converts, gates and writes one bundle (see the module docstring); returns (exit code, path)."""
    from training import convert_tflite, postprocess_model
    if not 0.0 <= max_drop < 1.0:
        raise UserError("--max-drop must be in [0, 1), got {}".format(max_drop))
    from training import postprocess_options
    # The cheap checks first, in command-line order: a bad --out, label file, pipeline or image
    # folder is said before the SavedModel loads and minutes of conversion.
    bundle_writer.check_destination(out, force)
    given_labels = read_labels(labels_path) if labels_path else None
    ssd = postprocess_options.read_ssd(pipeline) if pipeline else None
    images = read_images(images_dir)
    height, width = input_size(saved_model)
    exported = _exported_options(saved_model)
    options = _op_options(exported, pipeline, ssd, log)
    _check_label_count(given_labels, labels_path, exported["num_classes"])
    staged = bundle_writer.staging_dir(out)
    try:
        staged_model, nms = _stage_savedmodel(saved_model, options, staged)
        try:
            paths = _convert_both(staged_model, images, height, width, staged)
        except convert_tflite.ConversionCheckError as e:
            bundle_writer.write_json_atomic(os.path.join(staged, "report.json"), {
                "passed": False, "rejected_by": "uint8 check", "error": str(e)})
            where = bundle_writer.reject(staged, out)
            log("conversion REJECTED: {}: {}\nIt is in {}; run `edgedet-train doctor` on it.".format(
                INT8_FILE, e, where))
            return EXIT_REJECTED, where
        float_dets = postprocess_model.run_model(paths["float"], images)
        int8_dets = postprocess_model.run_model(paths["int8"], images)
        labels = _labels(given_labels, float_dets)
        fid = compare(float_dets, int8_dets, images, len(labels), max_drop, FOREIGN_DEFAULTS["score_threshold"])
        with open(os.path.join(staged, "labels.txt"), "w") as f:
            f.write("".join("{}  {}\n".format(i, name) for i, name in enumerate(labels)))
        meta = _model_json(labels, height, width, paths["int8"], saved_model, fid, nms,
                           _write_samples(staged, images))
        bundle_writer.write_json_atomic(os.path.join(staged, "report.json"), {"fidelity": fid})
        bundle_writer.write_json_atomic(os.path.join(staged, "model.json"), meta)
        return _finish(staged, out, force, fid, log)
    except BaseException:
        bundle_writer.discard(staged)
        raise


def _finish(staged, out, force, fid, log):
    summary = "int8 vs float: mAP {:.4f}, mAP@0.5 {:.4f} (float = 1 as reference), agreement {:.3f}".format(
        fid["int8"]["map"], fid["int8"]["map50"], fid["agreement"])
    if fid["passed"]:
        bundle_writer.publish(staged, out, force)
        log("bundle written to {}: {}\nRun it: edgedet --model {}".format(out, summary, out))
        return 0, os.path.abspath(out)
    where = bundle_writer.reject(staged, out)
    log("fidelity gate FAILED: {}\n  {}\nThe model was NOT written to --out; it is in {}.\nDiagnose it with "
        "`edgedet-train doctor --float {}/{} --quant {}/{} --images IMAGES`".format(
            summary, "\n  ".join(fid["reasons"]), where, where, FLOAT_FILE, where, INT8_FILE))
    return EXIT_REJECTED, where


def run(args):
    code, _ = convert_savedmodel(args.saved_model, args.images, args.out, args.labels, args.max_drop, args.force,
                                 args.pipeline)
    return code
