"""COCO mAP of a checkpoint or of any .tflite, measured the way the device sees it.

Images go through `app.model.preprocess` and raw head outputs through
`app.model.postprocess.decode_ssd` (the app's decode + NMS, with the low eval score
threshold so the PR curve is complete), so an evaluation here is a promise about
the device. `edgedet-train eval --config C --workdir W [--model FILE.tflite]`.
"""

import collections
import contextlib
import io
import json

import numpy as np

from app import arguments
from app.model import preprocess
from app.errors import UserError

# What decoding needs besides the outputs; a loaded app.model.bundle.Bundle has the same attributes.
ModelSpec = collections.namedtuple(
    "ModelSpec", "input_height input_width float_range anchors box_coder_scales score_converter resize")


def spec_from_config(cfg):
    """ModelSpec of a training config (anchors from app.model.anchors, the only anchor maths)."""
    from app.model.anchors import anchors_from_config
    bc = cfg.model.box_coder
    return ModelSpec(cfg.model.input_height, cfg.model.input_width, tuple(preprocess.INPUT_RANGE),
                     anchors_from_config(cfg.model),
                     (bc.y_scale, bc.x_scale, bc.height_scale, bc.width_scale), cfg.model.score_converter,
                     cfg.model.resize)


def eval_decode_kwargs(cfg):
    """decode_ssd thresholds for mAP: the eval score threshold and cap, the app's NMS IoU and mode."""
    return dict(score_threshold=cfg.eval.score_threshold, iou_threshold=cfg.postprocess.iou_threshold,
                max_detections=cfg.eval.max_detections, max_detections_per_class=cfg.eval.max_detections,
                class_agnostic_nms=cfg.postprocess.class_agnostic_nms)


def decode_image(example):
    """Example.encoded (JPEG/PNG bytes) -> RGB uint8 [H, W, 3], as the app reads a frame."""
    import cv2
    bgr = cv2.imdecode(np.frombuffer(example.encoded, dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError("eval image {!r} cannot be decoded; check the data set".format(example.source_id))
    return preprocess.bgr_to_rgb(bgr)


def model_input(image_rgb, spec, dtype=np.float32, quantization=None):
    """RGB uint8 image -> [1, H, W, 3] input of the given dtype (the app's input path).

    A uint8 model gets the resized pixels as they are: its input quantization
    must already map 0..255 onto spec.float_range (export asserts it).
    """
    if np.dtype(dtype) == np.uint8:
        return preprocess.resize_to_input(image_rgb, spec.input_height, spec.input_width, spec.resize)[None]
    x = preprocess.image_to_float_input(image_rgb, spec.input_height, spec.input_width,
                                        spec.float_range, spec.resize)
    if np.dtype(dtype) == np.int8:
        scale, zero = quantization
        return np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
    return x.astype(np.float32)


def _decode(boxes, logits, spec, decode_kwargs, box_q=None, logit_q=None):
    from app.model.postprocess import decode_ssd
    return decode_ssd(boxes, logits, spec.anchors, box_coder_scales=spec.box_coder_scales,
                      score_converter=spec.score_converter, box_quantization=box_q,
                      logit_quantization=logit_q, **decode_kwargs)


def predict_keras(model, examples, cfg, batch_size=8):
    """Detections of a tf_keras model (float or QAT) on every example.

    Args:
      model: tf_keras.Model, input float32 [B, H, W, 3] in [-1, 1], outputs
        [box_encodings [B, N, 4], class_logits [B, N, C]] (list or dict).
      examples: Examples-like with .encoded.
      cfg: training Config.

    Returns:
      list of app.model.postprocess.Detections (normalized ymin, xmin, ymax, xmax), one per example.
    """
    spec, kwargs, out = spec_from_config(cfg), eval_decode_kwargs(cfg), []
    for start in range(0, len(examples), batch_size):
        batch = [model_input(decode_image(e), spec)[0] for e in examples[start:start + batch_size]]
        result = model(np.stack(batch), training=False)
        if isinstance(result, dict):
            result = [result["box_encodings"], result["class_logits"]]
        boxes, logits = np.asarray(result[0]), np.asarray(result[1])
        out.extend(_decode(boxes[i], logits[i], spec, kwargs) for i in range(len(batch)))
    return out


def predict_tflite(path, examples, spec, decode_kwargs, outputs=None, model=None):
    """Detections of a .tflite file on every example, exactly the app's path.

    Args:
      path: .tflite with raw head outputs (float or full-integer).
      examples: Examples-like with .encoded.
      spec: ModelSpec or app.model.bundle.Bundle (input size, float range, anchors, coder, converter).
      decode_kwargs: decode_ssd thresholds (see `eval_decode_kwargs`).
      outputs: optional {"box_encodings"|"class_logits": tensor name} from model.json.
      model: an already loaded TfliteModel (then `path` is only for messages).

    Returns:
      list of Detections, one per example.
    """
    from training.tflite_model import TfliteModel
    model = model or TfliteModel(path, outputs)
    if model.input_size() != (spec.input_height, spec.input_width):
        raise UserError("{}: input is {}x{} but the config says {}x{}; pass the matching --config"
                        .format(path, model.input_size()[0], model.input_size()[1],
                                spec.input_height, spec.input_width))
    box_q, logit_q = model.quantization("box_encodings"), model.quantization("class_logits")
    dets = []
    for example in examples:
        x = model_input(decode_image(example), spec, model.input_dtype, model.input_quantization)
        boxes, logits = model.invoke(x)
        dets.append(_decode(boxes, logits, spec, decode_kwargs, box_q, logit_q))
    return dets


def _coco_dicts(ground_truth, predictions, num_classes):
    """Ground truth and detections as COCO dicts, boxes in source pixels [x, y, w, h]."""
    images, anns, dets = [], [], []
    for i, (ex, pred) in enumerate(zip(ground_truth, predictions)):
        images.append({"id": i, "height": int(ex.height), "width": int(ex.width)})
        scale = np.array([ex.height, ex.width, ex.height, ex.width], dtype=np.float64)
        for box, cls in zip(np.asarray(ex.boxes, np.float64) * scale, ex.classes):
            w, h = box[3] - box[1], box[2] - box[0]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(cls) + 1, "iscrowd": 0,
                         "bbox": [box[1], box[0], w, h], "area": w * h})
        for box, score, cls in zip(np.asarray(pred.boxes, np.float64) * scale, pred.scores, pred.class_ids):
            dets.append({"image_id": i, "category_id": int(cls) + 1, "score": float(score),
                         "bbox": [box[1], box[0], box[3] - box[1], box[2] - box[0]]})
    cats = [{"id": c + 1, "name": str(c)} for c in range(num_classes)]
    return {"images": images, "annotations": anns, "categories": cats}, dets


def _per_class(precision, num_classes):
    """AP@[.5:.95] and AP@.5 per class from COCOeval precision [T, R, K, A, M]; None without GT."""
    rows = []
    for k in range(num_classes):
        p = precision[:, :, k, 0, -1]
        rows.append({"class_id": k,
                     "ap": float(np.mean(p[p > -1])) if np.any(p > -1) else None,
                     "ap50": float(np.mean(p[0][p[0] > -1])) if np.any(p[0] > -1) else None})
    return rows


def coco_metrics(ground_truth, predictions, num_classes):
    """COCO box mAP of detections against ground truth (pycocotools, maxDets 100).

    Args:
      ground_truth: Examples-like; each has height, width, boxes float [K, 4]
        normalized (ymin, xmin, ymax, xmax), classes int [K] 0-based.
      predictions: list of Detections (normalized ymin, xmin, ymax, xmax), one per example.
      num_classes: number of classes.

    Returns:
      dict: map (AP@[.5:.95]), map50, per_class (list of {class_id, ap, ap50}),
      pr_curve ({recall: [101], precision: [num_classes][101]} at IoU 0.5, -1 where undefined),
      num_images, num_detections.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    if len(ground_truth) != len(predictions):
        raise ValueError("expected one Detections per example: {} examples, {} predictions"
                         .format(len(ground_truth), len(predictions)))
    gt_dict, dets = _coco_dicts(ground_truth, predictions, num_classes)
    if not gt_dict["annotations"]:
        raise ValueError("ground truth has no boxes; mAP is undefined")
    result = {"num_images": len(predictions), "num_detections": len(dets)}
    if not dets:
        return dict(result, map=0.0, map50=0.0, pr_curve=None,
                    per_class=[{"class_id": k, "ap": 0.0, "ap50": 0.0} for k in range(num_classes)])
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its tables
        gt = COCO()
        gt.dataset = gt_dict
        gt.createIndex()
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    precision = ev.eval["precision"]
    curve = {"recall": [float(r) for r in ev.params.recThrs],
             "precision": [[float(v) for v in precision[0, :, k, 0, -1]] for k in range(num_classes)]}
    return dict(result, map=max(0.0, float(ev.stats[0])), map50=max(0.0, float(ev.stats[1])),
                per_class=_per_class(precision, num_classes), pr_curve=curve)


def load_eval_examples(cfg, limit=None):
    """The eval split (at most cfg.eval.max_images, or `limit`, images)."""
    from training.data.dataset import load_split
    examples = load_split(cfg.data, "eval", cfg.model.labels)
    n = limit or cfg.eval.max_images
    return examples[:n] if n else examples


def add_arguments(parser):
    parser.add_argument("--config", required=True, type=arguments.input_file, help="config.yaml")
    parser.add_argument("--workdir", type=arguments.input_dir, help="training workdir (evaluates its last checkpoint)")
    parser.add_argument("--model", type=arguments.input_file, help="a .tflite with raw SSD outputs to evaluate instead")
    parser.add_argument("--json", type=arguments.output_file, help="also write the metrics to this JSON file")


def run(args):
    from training.config import load_config
    cfg = load_config(args.config)
    examples = load_eval_examples(cfg)
    if args.model:
        preds = predict_tflite(args.model, examples, spec_from_config(cfg), eval_decode_kwargs(cfg))
    elif args.workdir:
        from training.train import restore_model
        model, cfg, _ = restore_model(args.workdir)
        preds = predict_keras(model, examples, cfg)
    else:
        raise UserError("eval: pass --workdir DIR (a checkpoint) or --model FILE.tflite")
    metrics = coco_metrics(examples, preds, len(cfg.model.labels))
    print("mAP {:.4f}  mAP@0.5 {:.4f}  ({} images, {} detections)".format(
        metrics["map"], metrics["map50"], metrics["num_images"], metrics["num_detections"]))
    for row in metrics["per_class"]:
        ap = "-" if row["ap"] is None else "{:.4f}".format(row["ap"])
        print("  {:<12} AP {}".format(cfg.model.labels[row["class_id"]], ap))
    if args.json:
        from training.bundle_writer import write_json_atomic
        write_json_atomic(args.json, {k: v for k, v in metrics.items() if k != "pr_curve"})
    return 0
