"""One model of a comparison: train, export the QAT model and the post-training one, measure.

Folder of one model inside the comparison's workdir:
  run/            the training run (training.train)
  qat/, ptq/      the bundles the export wrote, when its gate passed
  rejected/       the bundles it rejected (training.bundle_writer.reject)
  result.json     this model's row, written last: a comparison that finds it skips the model
"""

import json
import os
import sys
import time

from app.errors import UserError
from training import bundle_writer, export, train, workdir as run_dir
from training.compare import measure

RESULT_FILE = "result.json"


def read_result(folder):
    """The row a finished model left in `folder`, or None."""
    path = os.path.join(folder, RESULT_FILE)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _train(model, folder, train_examples, log):
    """Trains (or finishes training) the model in folder/run; returns the seconds it took."""
    from training.data import dataset as data_io, pipeline
    run = os.path.join(folder, "run")
    state = run_dir.read_state(run)
    if state is not None and state["step"] >= model.cfg.train.steps:
        log("{}: already trained ({} steps)".format(model.name, state["step"]))
        return None
    start = time.time()
    cache = model.cfg.data.cache and pipeline.fits_in_cache(train_examples)
    train.train(model.cfg, run, data_io.decoded_dataset(train_examples), cache=cache,
                resume=state is not None, out=sys.stdout)
    return time.time() - start


def restore_float(run, step):
    """The float model of a quantization-aware run as it was at `step` (its last float checkpoint).

    Returns:
      (tf_keras model, state dict for the export: {"step", "phase": "float", ...}).
    """
    import tensorflow as tf
    from training import model as ssd_model
    cfg = run_dir.read_config(run)
    path = os.path.join(run, run_dir.CHECKPOINTS, "ckpt-{}".format(step))
    if not os.path.exists(path + ".index"):
        raise UserError("{}: no float checkpoint at step {}; delete {} and compare again".format(path, step, run))
    model = ssd_model.build_ssd(cfg.model)
    tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    return model, {"step": step, "phase": "float", "quantization_aware": False}


def failure(stage, error):
    """What the row records for a model that did not get through `stage`: the error's first line."""
    return {"failed": "{}: {}".format(type(error).__name__, (str(error).splitlines() or [""])[0]), "stage": stage}


def _export(model, cfg, state, examples, out, log):
    """export.export_bundle through the same gate; the report it wrote, or why it failed."""
    try:
        code, where = export.export_bundle(model, cfg, state, examples, out, force=True,
                                           max_drop=cfg.export.max_drop, log=log)
    except Exception as e:  # one model's failed conversion must not end the comparison
        log("export of {} FAILED: {}: {}".format(out, type(e).__name__, e))
        return failure("export error", e)
    with open(os.path.join(where, "report.json")) as f:
        report = json.load(f)
    return {"bundle": where, "passed": code == 0, "report": report}


def compare_one(model, folder, train_examples, eval_examples, log=print):
    """Trains and exports one model; writes and returns its row (see training.compare.table).

    Args:
      model: settings.Model.
      folder: this model's folder in the comparison's workdir.
      train_examples, eval_examples: the shared data (records.Examples).
      log: where progress lines go.
    """
    import tf_keras as keras
    keras.backend.clear_session()  # the previous model's graphs
    os.makedirs(folder, exist_ok=True)
    try:
        seconds = _train(model, folder, train_examples, log)
    except train.TrainingDiverged as e:  # a row saying so; the other models still compare
        log("{}: training diverged: {}".format(model.name, e))
        lost = failure("training diverged", e)
        return _write_row(folder, measure.row(model, model.cfg, lost, lost, eval_examples, None))
    run = os.path.join(folder, "run")
    qat_model, cfg, state = train.restore_model(run)
    log("{}: exporting the quantization-aware model (step {})".format(model.name, state["step"]))
    qat = _export(qat_model, cfg, state, eval_examples, os.path.join(folder, "qat"), log)
    delay = cfg.train.quantization.delay
    log("{}: post-training int8 of the float checkpoint (step {})".format(model.name, delay))
    float_model, float_state = restore_float(run, delay)
    ptq = _export(float_model, cfg, float_state, eval_examples, os.path.join(folder, "ptq"), log)
    return _write_row(folder, measure.row(model, cfg, qat, ptq, eval_examples, seconds))


def _write_row(folder, row):
    bundle_writer.write_json_atomic(os.path.join(folder, RESULT_FILE), row)
    return row
