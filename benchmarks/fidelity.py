"""Re-evaluate any bundle on any eval set: float vs int8 COCO mAP, mAP@0.5 and their ratio.

    python benchmarks/fidelity.py --bundle models/demo --tfrecord data/synth/eval.tfrecord
    python benchmarks/fidelity.py --bundle models/demo --coco-json ann.json --coco-images imgs/

The label map of a TFRecord defaults to the bundle's labels (ids 1..C); pass --label-map
for an OD API label_map.pbtxt. Both models run through the app's preprocessing and
decode/NMS, exactly as in the export's fidelity gate.
"""

import argparse
import dataclasses
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app.errors import UserError, run_cli  # noqa: E402


def _examples(args, labels):
    if args.tfrecord:
        from training.data.records import load_tfrecord
        if args.label_map:
            from training.data.label_map import read_label_map
            label_map = read_label_map(args.label_map)
        else:
            label_map = {i + 1: name for i, name in enumerate(labels)}
        examples = load_tfrecord(args.tfrecord, label_map)
    elif args.coco_json and args.coco_images:
        from training.data.coco import load_coco
        examples = load_coco(args.coco_json, args.coco_images, labels)
    else:
        raise UserError("pass --tfrecord FILE, or --coco-json FILE and --coco-images DIR")
    return examples[:args.max_images] if args.max_images else examples


def _config_for(bundle, args):
    """A training Config whose labels and live thresholds are the bundle's (eval thresholds default)."""
    from training.config import load_config
    cfg = load_config(args.config)
    model = dataclasses.replace(cfg.model, labels=list(bundle.labels))
    pp = dataclasses.replace(cfg.postprocess, **bundle.postprocess)
    return dataclasses.replace(cfg, model=model, postprocess=pp)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", required=True, help="bundle directory (models/NAME)")
    parser.add_argument("--tfrecord", help="OD API TFRecord eval set")
    parser.add_argument("--label-map", help="label_map.pbtxt for --tfrecord (default: bundle labels)")
    parser.add_argument("--coco-json", help="COCO annotations JSON")
    parser.add_argument("--coco-images", help="folder of the COCO images")
    parser.add_argument("--config", help="config.yaml for eval thresholds (default: built-in defaults)")
    parser.add_argument("--max-images", type=int, default=0, help="evaluate at most this many images")
    parser.add_argument("--max-drop", type=float, default=0.02, help="gate's allowed relative mAP drop")
    parser.add_argument("--json", help="also write the result as JSON here")
    args = parser.parse_args(argv)
    from app.model.bundle import load_bundle
    from training import fidelity
    bundle = load_bundle(args.bundle)
    for kind in ("float", "int8"):
        if kind not in bundle.models:
            raise UserError("{}: has no {} model; both are needed to compare".format(args.bundle, kind))
    cfg = _config_for(bundle, args)
    examples = _examples(args, bundle.labels)
    result, _, _ = fidelity.measure(bundle.models["float"].file, bundle.models["int8"].file, examples, bundle,
                                    cfg, args.max_drop, bundle.models["float"].outputs,
                                    bundle.models["int8"].outputs)
    f, q = result["float"], result["int8"]
    print("{} on {} images".format(bundle.path, result["num_images"]))
    print("          mAP     mAP@0.5")
    print("float   {:.4f}   {:.4f}".format(f["map"], f["map50"]))
    print("int8    {:.4f}   {:.4f}".format(q["map"], q["map50"]))
    print("ratio   {}   {}".format(*["{:.4f}".format(r) if r is not None else "  -   "
                                     for r in (result["ratio"], result["ratio50"])]))
    print("agreement {:.3f}; gate (max drop {:g}): {}".format(result["agreement"], args.max_drop,
                                                              "pass" if result["passed"] else "FAIL"))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({k: v for k, v in result.items() if k != "pr_curve"}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="benchmarks/fidelity.py"))
