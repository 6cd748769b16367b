"""`edgedet-train import-checkpoint`: a TF2 OD API checkpoint -> a normal edgedet training workdir.

    edgedet-train import-checkpoint --pipeline pipeline.config --checkpoint DIR_OR_PREFIX --workdir DIR

It imports the pipeline.config (import-config), builds edgedet's SSD MobileNetV2 from it, loads
every OD API model variable into it (training/odapi_checkpoint.py: by structure and shape), sets
model.resize to bilinear_tf1 (the OD API's fixed_shape_resizer, which these weights were trained
on) and writes the workdir the way `train` does: config.yaml, checkpoints/ckpt-<step>, then
state.json (the commit point) at the OD API's step. `eval`, `export`, `train --resume` and the
doctor read it unchanged. odapi_import.json in the workdir lists every checkpoint entry: where it
went, or why it was skipped.
"""

import collections
import os
import sys

from app import arguments
from app.errors import UserError

IMPORT_REPORT = "odapi_import.json"

# The result of an import: the float SSD with the OD API weights, the imported
# training.config.Config, the odapi_checkpoint.Plan, the OD API's step, the checkpoint
# prefix used, and import-config's report of the pipeline.config.
Imported = collections.namedtuple("Imported", "model cfg plan step prefix config_report")


def checkpoint_argument(text):
    """argparse type: a ckpt-N prefix whose .index exists, or a folder with a `checkpoint` state file."""
    import argparse
    if os.path.isfile(text + ".index"):
        arguments.input_file(text + ".index")
        return text
    if os.path.isdir(text) and os.path.isfile(os.path.join(text, "checkpoint")):
        return arguments.input_dir(text)
    raise argparse.ArgumentTypeError("{}: not a checkpoint (no {}.index, and not a folder holding a "
                                     "'checkpoint' file); pass the ckpt-N prefix or its folder".format(text, text))


def add_arguments(parser):
    parser.add_argument("--pipeline", required=True, type=arguments.input_file,
                        help="the OD API pipeline.config it was trained with")
    parser.add_argument("--checkpoint", required=True, type=checkpoint_argument,
                        help="checkpoint prefix (.../ckpt-4) or the folder holding it (latest is used)")
    parser.add_argument("--workdir", required=True, type=arguments.output_dir, help="edgedet run folder to create")


def resolve_checkpoint(path):
    """A checkpoint prefix from a prefix or a folder (tf.train.latest_checkpoint)."""
    import tensorflow as tf
    if os.path.isdir(path):
        latest = tf.train.latest_checkpoint(path)
        if latest is None:
            raise UserError("--checkpoint {}: folder holds no checkpoint (no 'checkpoint' state file). "
                            "Pass the ckpt-N prefix instead.".format(path))
        return latest
    if not os.path.exists(path + ".index"):
        raise UserError("--checkpoint {}: no such checkpoint ({}.index is missing). Pass the ckpt-N "
                        "prefix or its folder.".format(path, path))
    return path


def _with_data_paths(cfg, pipeline):
    """Data paths relative to the pipeline.config's folder made absolute, so the workdir works anywhere."""
    from app.config import replace
    from training.import_config import _existing
    base = os.path.dirname(os.path.abspath(pipeline))
    found = {k: _existing(getattr(cfg.data, k), base) for k in ("train", "eval", "label_map")}
    data = replace(cfg.data, **{k: os.path.abspath(v) for k, v in found.items() if v})
    return replace(cfg, data=data)


def import_checkpoint(pipeline, checkpoint, imported=None):
    """Builds edgedet's model from a pipeline.config and loads an OD API checkpoint into it.

    Args:
      pipeline: path of the OD API pipeline.config.
      checkpoint: checkpoint prefix or folder.
      imported: import_config.import_pipeline(pipeline) when the caller already has it.

    Returns:
      Imported.

    Raises:
      UserError: unreadable inputs, or a checkpoint that does not fit the pipeline.
    """
    import tensorflow as tf
    from app.config import replace
    from training import import_config, model as ssd_model, odapi_checkpoint
    prefix = resolve_checkpoint(checkpoint)
    entries = odapi_checkpoint.read_entries(prefix)
    cfg, config_report = imported or import_config.import_pipeline(pipeline)
    # The OD API trained these weights on its fixed_shape_resizer's TF1 resize.
    cfg = replace(_with_data_paths(cfg, pipeline), model=replace(cfg.model, resize="bilinear_tf1"))
    model = ssd_model.build_ssd(cfg.model)
    plan = odapi_checkpoint.plan(model, cfg.model, entries, prefix)
    odapi_checkpoint.load(plan, prefix)
    step = 0
    if "step" in entries:
        step = int(tf.train.load_checkpoint(prefix).get_tensor("step" + odapi_checkpoint.SUFFIX))
    return Imported(model, cfg, plan, step, prefix, config_report)


def write_workdir(workdir, model, cfg, step, report):
    """Writes config.yaml, checkpoints/ckpt-<step> (model + a fresh optimizer), the report, state.json."""
    import tensorflow as tf
    from training import train, workdir as run_dir
    from training.bundle_writer import write_json_atomic
    run_dir.prepare(workdir, cfg, resume=False)
    checkpoint = tf.train.Checkpoint(model=model, optimizer=train.make_optimizer(cfg.train, step))
    manager = tf.train.CheckpointManager(
        checkpoint, os.path.join(workdir, run_dir.CHECKPOINTS), max_to_keep=3)
    path = manager.save(checkpoint_number=step)
    write_json_atomic(os.path.join(workdir, IMPORT_REPORT), report)
    run_dir.write_state(workdir, {"step": step, "phase": "float", "checkpoint": os.path.basename(path),
                                  "quantization_aware": False, "imported_from": report["checkpoint"]})


def import_report(plan, pipeline, prefix, step):
    """The JSON-able record of the import: every entry loaded (-> variable) or skipped (reason).

    A class head that predicted background is in both: loaded, and its background column skipped.
    """
    return {"pipeline": os.path.abspath(pipeline), "checkpoint": os.path.abspath(prefix), "step": step,
            "loaded": {a.key: a.variable.name for a in plan.assignments},
            "skipped": {key: reason for key, reason in plan.skipped}}


def _summary_lines(plan):
    reasons = collections.Counter(reason for _, reason in plan.skipped)
    params = sum(int(a.variable.shape.num_elements()) for a in plan.assignments)
    lines = ["loaded {} variables ({} parameters)".format(len(plan.assignments), params)]
    lines += ["skipped {} x {}".format(n, reason) for reason, n in sorted(reasons.items())]
    return lines


def run(args):
    from training import import_config, workdir as run_dir
    imported = import_config.import_pipeline(args.pipeline)  # cheap checks in command-line order,
    if run_dir.read_state(args.workdir) is not None:      # then the import, which takes seconds
        raise UserError("--workdir {}: already holds a training run; choose a new folder".format(args.workdir))
    result = import_checkpoint(args.pipeline, args.checkpoint, imported)
    report = import_report(result.plan, args.pipeline, result.prefix, result.step)
    write_workdir(args.workdir, result.model, result.cfg, result.step, report)
    for line in _summary_lines(result.plan):
        print("import-checkpoint: " + line)
    for line in import_config.problem_lines(result.config_report):
        print("import-checkpoint: config: " + line, file=sys.stderr)
    print("import-checkpoint: wrote {} (step {}; every entry in {})".format(
        args.workdir, result.step, os.path.join(args.workdir, IMPORT_REPORT)), file=sys.stderr)
    return 0
