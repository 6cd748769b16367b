"""`edgedet-train export`: a uint8 model proven against its float twin, written as a bundle.

In order: batch-1 float SavedModel -> model_float.tflite -> model_int8.tflite
(calibrated through app.model.preprocess, then checked) -> fidelity gate on the eval split ->
Edge TPU preflight and compiler -> the bundle, renamed into place only if the gate passed.
A rejected model goes to <out>/../rejected/.

Calibration takes eval images when the eval split has MIN_CALIBRATION_IMAGES, else training
images: it only sets activation ranges, so it needs no held-out data, and OD API users often have
small eval sets. The gate always measures on the eval images (at least MIN_GATE_IMAGES), and
model.json's fidelity says how many images of which split calibrated and how many were gated.

Exit codes: 0 written, 1 rejected by a check or the gate, 2 bad input (nothing written).
"""

import datetime
import os
import time

import numpy as np

from app import arguments
from app.model import preprocess
from app.errors import UserError
from training import bundle_writer, convert_tflite, evaluate, fidelity, report

MIN_CALIBRATION_IMAGES = 100
MIN_GATE_IMAGES = 50   # eval images the fidelity gate needs (paired float vs int8 on the same images)
NUM_SAMPLES = 4        # eval images the app checks itself on at start-up
NUM_REPORT_IMAGES = 8  # float vs int8 pictures in report.html
EXIT_REJECTED = 1


def add_arguments(parser):
    parser.add_argument("--config", required=True, type=arguments.input_file,
                        help="config.yaml (data, eval and export sections)")
    parser.add_argument("--workdir", required=True, type=arguments.input_dir,
                        help="training workdir with checkpoints/ and state.json")
    parser.add_argument("--out", required=True, type=arguments.output_dir,
                        help="bundle directory to write, e.g. models/demo")
    parser.add_argument("--max-drop", type=arguments.number(0, 1, high_open=True), default=None,
                        help="largest relative int8 mAP drop vs float (default export.max_drop)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle (atomically)")
    parser.add_argument("--with-postprocess", action="store_true",
                        help="also write model_int8_postprocess.tflite ending in TFLite_Detection_PostProcess")


def _check_same_model(cfg, trained_cfg, config_path, workdir):
    """UserError when config.yaml's model section differs from the one the checkpoint was trained with."""
    from training.config import to_dict
    want, have = to_dict(cfg.model), to_dict(trained_cfg.model)
    diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
    if diff:
        raise UserError("{}: model.{} = {!r} but {} was trained with {!r}; pass --config {}/config.yaml "
                        "or retrain".format(config_path, diff[0], want.get(diff[0]), workdir,
                                            have.get(diff[0]), workdir))


def run(args):
    from training.config import load_config
    from training.data.dataset import load_split
    from training.train import restore_model
    cfg = load_config(args.config)
    max_drop = cfg.export.max_drop if args.max_drop is None else args.max_drop
    if not 0.0 <= max_drop < 1.0:
        raise UserError("--max-drop must be in [0, 1), got {}".format(max_drop))
    bundle_writer.check_destination(args.out, args.force)
    model, trained_cfg, state = restore_model(args.workdir)
    _check_same_model(cfg, trained_cfg, args.config, args.workdir)
    examples = evaluate.load_eval_examples(cfg)
    calibration = calibration_set(examples, lambda: load_split(cfg.data, "train", cfg.model.labels))
    code, _ = export_bundle(model, cfg, state, examples, args.out, force=args.force, max_drop=max_drop,
                            with_postprocess=args.with_postprocess or cfg.export.with_postprocess,
                            calibration=calibration)
    return code


def calibration_set(eval_examples, load_train):
    """(examples, split name) to calibrate on: the eval split if it has MIN_CALIBRATION_IMAGES,
    else `load_train()`, the training split (called only then)."""
    if len(eval_examples) >= MIN_CALIBRATION_IMAGES:
        return eval_examples, "eval"
    return load_train(), "train"


def _calibration_images(examples, split, count):
    if count < MIN_CALIBRATION_IMAGES or len(examples) < MIN_CALIBRATION_IMAGES:
        raise UserError("int8 calibration needs >= {} images; export.calibration_images is {} and the {} "
                        "split has {}. Add images or raise export.calibration_images"
                        .format(MIN_CALIBRATION_IMAGES, count, split, len(examples)))
    return [evaluate.decode_image(e) for e in examples[:count]]


def _check_gate_images(examples):
    if len(examples) < MIN_GATE_IMAGES:
        raise UserError("the fidelity gate needs >= {} eval images; the eval split has {}. Add eval images "
                        "(data.eval)".format(MIN_GATE_IMAGES, len(examples)))


def convert_all(model, cfg, calibration_rgb, folder, qat=False, log=print):
    """Steps 1-3: saved_model/, model_float.tflite, model_int8.tflite in `folder`, then the checks.

    For a quantization-aware model, saved_model/ and model_float.tflite are its float twin
    (fake-quant stripped) and model_int8.tflite is converted from the QAT graph, which
    carries the learned ranges.

    Returns:
      dict of file name -> absolute path.

    Raises:
      convert_tflite.ConversionCheckError: the uint8 model breaks an invariant.
    """
    import shutil
    h, w = cfg.model.input_height, cfg.model.input_width
    paths = {k: os.path.join(folder, k) for k in ("saved_model", "model_float.tflite", "model_int8.tflite")}
    t = time.time()
    float_model = model
    if qat:
        from training.float_twin import float_twin
        float_model = float_twin(model, cfg.model)
    convert_tflite.save_batch1_savedmodel(float_model, h, w, paths["saved_model"])
    with open(paths["model_float.tflite"], "wb") as f:
        f.write(convert_tflite.to_float_tflite(paths["saved_model"]))
    source = paths["saved_model"]
    if qat:
        source = os.path.join(folder, ".qat_saved_model")  # removed below: the bundle keeps the float one
        convert_tflite.save_batch1_savedmodel(model, h, w, source)
    log("saved_model/ and model_float.tflite written ({:.0f} s)".format(time.time() - t))
    rep = convert_tflite.calibration_inputs(calibration_rgb, h, w, preprocess.INPUT_RANGE,
                                            cfg.model.resize)
    int8 = convert_tflite.to_int8_tflite(source, rep)
    if qat:
        shutil.rmtree(source)
    with open(paths["model_int8.tflite"], "wb") as f:
        f.write(int8)
    log("model_int8.tflite converted{} ({:.0f} s)".format(" from the QAT model" if qat else "", time.time() - t))
    convert_tflite.check_full_integer(int8, preprocess.INPUT_RANGE)
    return paths


def _edgetpu(folder, int8_path, log=print):
    """Preflight always; the compiler when it is on PATH (its failure fails the export)."""
    from training.edgetpu.compiler import compile_model
    from training.edgetpu.preflight import preflight
    pre = preflight(int8_path)
    comp = compile_model(int8_path, folder)
    if not comp.get("available"):
        log("note: " + comp["how_to_get"])
    comp = {k: v for k, v in comp.items() if k not in ("stdout", "edgetpu_model")}
    pre = dict(pre, model=os.path.basename(pre["model"]))
    return {"preflight": pre, "compiler": comp}


def _write_samples(folder, examples):
    os.makedirs(os.path.join(folder, "samples"))
    names = []
    for i, ex in enumerate(examples[:NUM_SAMPLES]):
        ext = "png" if str(ex.image_format).lower() == "png" else "jpg"
        names.append("samples/{}.{}".format(i, ext))
        with open(os.path.join(folder, names[-1]), "wb") as f:
            f.write(ex.encoded)
    return names


def _postprocess_variant(model, spec, cfg, calibration, folder, examples, preds_q, log):
    """model_int8_postprocess.tflite (see training.postprocess_model), measured against preds_q."""
    from training import postprocess_model
    pp = cfg.postprocess
    n = min(len(examples), 50)
    reference = ([evaluate.decode_image(e) for e in examples[:n]],
                 [fidelity.live_detections(d, pp.score_threshold, pp.max_detections) for d in preds_q[:n]])
    return postprocess_model.write_for_bundle(model, spec, len(cfg.model.labels), pp, calibration, folder,
                                              reference, log)


def _model_entries(folder, compiled):
    from training.tflite_model import TfliteModel
    entries = {}
    for kind, name in (("float", "model_float.tflite"), ("int8", "model_int8.tflite")):
        tm = TfliteModel(os.path.join(folder, name))
        entries[kind] = {"file": name, "outputs": tm.output_names()}
        if tm.input_dtype == np.uint8:
            entries[kind]["input_quantization"] = list(tm.input_quantization)
    if compiled:
        entries["edgetpu"] = bundle_writer.edgetpu_entry(entries["int8"])
    return entries


def _model_json(cfg, state, models, fid, edgetpu, samples, anchors):
    from training.config import to_dict
    bc, pp = cfg.model.box_coder, cfg.postprocess
    return {
        "format_version": bundle_writer.FORMAT_VERSION,
        "labels": list(cfg.model.labels),
        "input": {"height": cfg.model.input_height, "width": cfg.model.input_width, "color": "RGB",
                  "resize": "stretch", "resize_method": cfg.model.resize,
                  "float_range": list(preprocess.INPUT_RANGE)},
        "num_anchors": int(len(anchors)),
        "box_coder": {"y_scale": bc.y_scale, "x_scale": bc.x_scale, "height_scale": bc.height_scale,
                      "width_scale": bc.width_scale},
        "score_converter": cfg.model.score_converter,
        "models": models,
        "postprocess": {"score_threshold": pp.score_threshold, "iou_threshold": pp.iou_threshold,
                        "max_detections": pp.max_detections,
                        "max_detections_per_class": pp.max_detections_per_class,
                        "class_agnostic_nms": pp.class_agnostic_nms},
        "training": {"quantization_aware": _is_qat(state), "steps": int(state.get("step", 0)),
                     "phase": state.get("phase"), "config": to_dict(cfg)},
        "fidelity": {k: v for k, v in fid.items() if k != "pr_curve"},
        "edgetpu": edgetpu,
        "samples": samples,
        "source": {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                   "edgedet_version": "0.1.0"},
    }


def _is_qat(state):
    return bool(state.get("quantization_aware") or state.get("phase") == "qat")


def _run_doctor(folder, examples, log):
    """`edgedet-train doctor` on a rejected bundle: doctor.json/.txt beside report.html.

    Returns the report's "doctor" entry; a doctor failure is reported there, not raised:
    the bundle is rejected either way and the user still needs report.html.
    """
    from training import doctor
    images = [evaluate.decode_image(e) for e in examples[:doctor.REJECTED_IMAGES]]
    try:
        entry = doctor.write_for_bundle(folder, images)
    except Exception as e:  # the diagnosis is an aid; the rejection stands without it
        log("note: the doctor could not diagnose the rejected bundle: {}".format(e))
        return {"error": "{}: {}".format(type(e).__name__, e)}
    log(entry["headline"])
    return entry


def _write_reports(folder, name, meta, fid, cfg, examples, preds_f, preds_q, quant, doctor=None):
    """report.json (every figure) and report.html (pictures, curves, tables; the doctor's
    headline and a link to doctor.json when `doctor` is given)."""
    rep = {"name": name, "created": meta["source"]["created"],
           "quantization_aware": meta["training"]["quantization_aware"], "fidelity": fid,
           "quantization": quant,
           "expected_input_quantization": list(preprocess.expected_input_quantization(preprocess.INPUT_RANGE)),
           "edgetpu": meta["edgetpu"], "models": meta["models"]}
    if doctor is not None:
        rep["doctor"] = doctor
    bundle_writer.write_json_atomic(os.path.join(folder, "report.json"), rep)
    pp = cfg.postprocess
    live = [fidelity.live_detections(d, pp.score_threshold, pp.max_detections)
            for d in preds_f[:NUM_REPORT_IMAGES] + preds_q[:NUM_REPORT_IMAGES]]
    n = min(NUM_REPORT_IMAGES, len(examples))
    images = [evaluate.decode_image(e) for e in examples[:n]]
    page = report.render_html(rep, cfg.model.labels, images, live[:n], live[len(live) - n:])
    with open(os.path.join(folder, "report.html"), "w") as f:
        f.write(page)
    return rep


def _finish(staged, out, force, fid, log):
    if fid["passed"]:
        bundle_writer.publish(staged, out, force)
        log("bundle written to {}: float mAP {:.4f}, int8 mAP {:.4f} (ratio {:.3f}), agreement {:.3f}".format(
            out, fid["float"]["map"], fid["int8"]["map"], fid["ratio"], fid["agreement"]))
        return 0, os.path.abspath(out)
    where = bundle_writer.reject(staged, out)
    log(fidelity.failure_message(fid, where))
    return EXIT_REJECTED, where


def export_bundle(model, cfg, state, examples, out, force=False, max_drop=0.02, with_postprocess=False,
                  log=print, calibration=None):
    """Converts, checks, gates and writes one bundle (see the module docstring).

    Args:
      model: tf_keras model (float or QAT-wrapped), float32 [B, H, W, 3] in [-1, 1] ->
        [box_encodings [B, N, 4], class_logits [B, N, C]].
      cfg: training Config.
      state: the workdir's state.json dict ({"step", "phase", "quantization_aware"}).
      examples: eval Examples (>= MIN_GATE_IMAGES): the gate measures on all of them.
      out: bundle directory.
      force: replace an existing bundle.
      max_drop: gate's allowed relative mAP drop.
      with_postprocess: also write model_int8_postprocess.tflite.
      log: where progress lines go.
      calibration: (Examples, split name) whose first export.calibration_images calibrate
        (calibration_set); default (examples, "eval").

    Returns:
      (exit code 0 | 1, path of the bundle or of the rejected folder).
    """
    bundle_writer.check_destination(out, force)
    _check_gate_images(examples)
    calibration_examples, split = calibration or (examples, "eval")
    calibration = _calibration_images(calibration_examples, split, cfg.export.calibration_images)
    log("calibrating on {} {} images; the gate measures on {} eval images".format(
        len(calibration), split, len(examples)))
    staged = bundle_writer.staging_dir(out)
    try:
        try:
            paths = convert_all(model, cfg, calibration, staged, _is_qat(state), log)
        except convert_tflite.ConversionCheckError as e:
            with open(os.path.join(staged, "model_int8.tflite"), "rb") as f:
                quant = convert_tflite.quantization_params(f.read())
            bundle_writer.write_json_atomic(os.path.join(staged, "report.json"), {
                "name": os.path.basename(os.path.abspath(out)), "passed": False,
                "rejected_by": "full-integer check", "error": str(e), "quantization": quant,
                "expected_input_quantization": list(preprocess.expected_input_quantization())})
            where = bundle_writer.reject(staged, out)
            log("export REJECTED: model_int8.tflite fails a full-integer check: {}\nIt is in {}; run "
                "`edgedet-train doctor` on it.".format(e, where))
            return EXIT_REJECTED, where
        spec = evaluate.spec_from_config(cfg)
        t = time.time()
        fid, preds_f, preds_q = fidelity.measure(paths["model_float.tflite"], paths["model_int8.tflite"],
                                                 examples, spec, cfg, max_drop)
        fid["calibration"] = {"split": split, "num_images": len(calibration)}
        log("fidelity measured on {} eval images ({:.0f} s)".format(len(examples), time.time() - t))
        edgetpu = _edgetpu(staged, paths["model_int8.tflite"], log)
        models = _model_entries(staged, bool(edgetpu["compiler"].get("available")))
        extra = None
        if with_postprocess:
            extra = _postprocess_variant(model, spec, cfg, calibration, staged, examples, preds_q, log)
        np.save(os.path.join(staged, "anchors.npy"), spec.anchors)
        with open(os.path.join(staged, "labels.txt"), "w") as f:
            f.write("".join("{}  {}\n".format(i, name) for i, name in enumerate(cfg.model.labels)))
        meta = _model_json(cfg, state, models, fid, edgetpu, _write_samples(staged, examples), spec.anchors)
        if extra:
            meta["postprocess_model"] = extra  # not under "models": the app reads it as a foreign model
        quant = convert_tflite.quantization_params(open(paths["model_int8.tflite"], "rb").read())
        name = os.path.basename(os.path.abspath(out))
        bundle_writer.write_json_atomic(os.path.join(staged, "model.json"), meta)
        doctor = None if fid["passed"] else _run_doctor(staged, examples, log)
        _write_reports(staged, name, meta, fid, cfg, examples, preds_f, preds_q, quant, doctor)
        return _finish(staged, out, force, fid, log)
    except BaseException:
        bundle_writer.discard(staged)
        raise
