"""The configs of one comparison: loaded, pointed at the same data and aligned on one schedule.

Every model trains the same steps with the same quantization delay and batch size, so the
table compares architectures, not schedules. The post-training row needs the float
checkpoint at the quantization delay; training saves every `checkpoint_every` steps and keeps
the last 3 checkpoints (training.train), so the comparison saves every `delay` steps, which
keeps that checkpoint as long as at most two saves follow it.
"""

import collections
import io
import os

from app.errors import UserError
from training import config as training_config, train
from training.export import MIN_CALIBRATION_IMAGES

# The train keys every model of one comparison must share (after --steps).
SHARED_TRAIN_KEYS = ("steps", "batch_size", "warmup_steps")

Model = collections.namedtuple("Model", "name path cfg")
Model.__doc__ = """One model of the comparison: its name (the config file's stem), the config
path as given, and the training Config with --data and --steps applied."""


def _schedule(cfg):
    t = cfg.train
    return tuple(getattr(t, k) for k in SHARED_TRAIN_KEYS) + (t.quantization.enabled, t.quantization.delay)


def _saves_after(delay, steps):
    """How many checkpoints training writes after step `delay` when it saves every `delay` steps."""
    return len(range(2 * delay, steps, delay)) + 1


def _check_quantization(path, train_cfg):
    q = train_cfg.quantization
    if not q.enabled or not 0 < q.delay < train_cfg.steps:
        raise UserError("{}: train.quantization: compare needs float then quantization-aware training "
                        "(enabled: true, 0 < delay < steps); got enabled {}, delay {} of {} steps"
                        .format(path, q.enabled, q.delay, train_cfg.steps))
    if _saves_after(q.delay, train_cfg.steps) >= train.KEPT_CHECKPOINTS:
        raise UserError("{}: train.quantization.delay {} is under a third of {} steps, so the float "
                        "checkpoint for the post-training row would not be kept; raise the delay"
                        .format(path, q.delay, train_cfg.steps))


def _for_compare(cfg):
    """Saves at the quantization delay (and no evaluation while training: the export measures)."""
    t = training_config.app_config.replace(cfg.train, checkpoint_every=cfg.train.quantization.delay,
                                           eval_every=0)
    return training_config.app_config.replace(cfg, train=t)


def load_models(paths, data_dir, steps):
    """The comparison's models, checked before anything trains.

    Args:
      paths: config.yaml paths, at least two, distinct file stems.
      data_dir: folder laid out as `edgedet-train synth` writes it (every model trains on it).
      steps: total steps for every model (rescaling each schedule), or None for the configs' own.

    Returns:
      list of Model.

    Raises:
      UserError: fewer than two configs, a repeated name, a config that is invalid, or
      configs whose labels, schedule or calibration settings differ.
    """
    models = []
    for path in paths:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in [m.name for m in models]:
            raise UserError("--config {}: a second config named {!r}; give each config its own file name"
                            .format(path, name))
        cfg = train.config_with_overrides(training_config.load_config(path), data_dir, steps, out=io.StringIO())
        _check_quantization(path, cfg.train)
        models.append(Model(name, path, _for_compare(cfg)))
    if len(models) < 2:  # after reading them: a broken config is the first thing to fix
        raise UserError("compare: pass --config at least twice (got {})".format(len(models)))
    _check_alike(models)
    return models


def _check_alike(models):
    first = models[0]
    for m in models[1:]:
        for what, get in (("model.labels", lambda c: c.model.labels), ("the train schedule", _schedule),
                          ("export.calibration_images", lambda c: c.export.calibration_images)):
            if get(m.cfg) != get(first.cfg):
                raise UserError("--config {}: {} {} differs from {}'s {}; compare trains every model the "
                                "same way".format(m.path, what, get(m.cfg), first.path, get(first.cfg)))
    if first.cfg.export.calibration_images < MIN_CALIBRATION_IMAGES:
        raise UserError("{}: export.calibration_images is {}; the export needs >= {}".format(
            first.path, first.cfg.export.calibration_images, MIN_CALIBRATION_IMAGES))
