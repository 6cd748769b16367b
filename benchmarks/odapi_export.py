"""A convert-savedmodel bundle against the OD API's own float detections and the ground truth.

    python benchmarks/odapi_export.py --bundle models/odapi [--odapi ../shared/fixtures/odapi]

Prints, for the OD API reference (reference_detections.json) and the bundle's float and int8
models on the fixture's eval images: COCO mAP and mAP@0.5 against eval_images/annotations.json
(detections with score >= the reference's 0.05), and detection agreement with the reference at
the app's live score threshold. Build the bundle with

    edgedet-train convert-savedmodel --saved-model ODAPI/saved_model --pipeline ODAPI/pipeline.config \\
        --labels ODAPI/data/label_map.pbtxt --images ODAPI/eval_images --out models/odapi
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from app.errors import run_cli  # noqa: E402

DEFAULT_ODAPI = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), os.pardir, "shared",
                             "fixtures", "odapi")


def above(dets, threshold):
    """Detections with score >= threshold, per image."""
    from training.fidelity import live_detections
    return [live_detections(d, threshold, len(d.scores)) for d in dets]


def reference(odapi):
    """(score threshold, Detections per eval image) of reference_detections.json."""
    from app.model.postprocess import Detections
    with open(os.path.join(odapi, "reference_detections.json")) as f:
        data = json.load(f)
    dets = [Detections(np.array([d["box"] for d in i["detections"]], np.float32).reshape(-1, 4),
                       np.array([d["score"] for d in i["detections"]], np.float32),
                       np.array([d["class_id"] for d in i["detections"]], np.int32)) for i in data["images"]]
    return data["score_threshold"], dets


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="convert-savedmodel bundle of ODAPI/saved_model")
    parser.add_argument("--odapi", default=DEFAULT_ODAPI, help="the fixture folder (default: ../shared/...)")
    args = parser.parse_args(argv)
    from app.check.agreement import pooled_agreement
    from app.inference.workers import FOREIGN_DEFAULTS
    from training import convert, evaluate, postprocess_model
    from training.data.coco import load_coco
    images_dir = os.path.join(args.odapi, "eval_images")
    with open(os.path.join(args.bundle, "model.json")) as f:
        labels = json.load(f)["labels"]
    truth = load_coco(os.path.join(images_dir, "annotations.json"), images_dir, labels)
    images = [evaluate.decode_image(e) for e in truth]
    threshold, ref = reference(args.odapi)
    live = FOREIGN_DEFAULTS["score_threshold"]
    runs = [("OD API float (reference)", ref)] + [
        (name, postprocess_model.run_model(os.path.join(args.bundle, name), images))
        for name in (convert.FLOAT_FILE, convert.INT8_FILE)]
    for name, dets in runs:
        m = evaluate.coco_metrics(truth, above(dets, threshold), len(labels))
        print("{:32s} mAP {:.4f}  mAP@0.5 {:.4f}  agreement with the reference at score >= {}: {:.4f}".format(
            name, m["map"], m["map50"], live, pooled_agreement(above(ref, live), above(dets, live))))
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="odapi_export"))
