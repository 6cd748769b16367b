"""Learning rate: the OD API cosine_decay_learning_rate with linear warmup, plus a QAT factor.

  step < warmup_steps:   warmup_lr + (base - warmup_lr) * step / warmup_steps
  otherwise:             0.5 * base * (1 + cos(pi * (step - warmup_steps) / (total - warmup_steps)))
  step >= total:         0
Quantization-aware steps (step >= qat_start) are multiplied by qat_scale, so the
fake-quant ranges settle on weights that move gently. A fine-tuning segment
(`edgedet-train finetune`) runs on FineTune instead: warmup, then its own constant rate.
"""

import math
from dataclasses import replace

import tensorflow as tf
import tf_keras as keras

from app.errors import UserError


class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """Cosine decay with linear warmup, as a Keras schedule of the optimizer step."""

    def __init__(self, base, total_steps, warmup_lr, warmup_steps, qat_start=None, qat_scale=1.0):
        """Args:
          base: peak learning rate (learning_rate_base), > 0.
          total_steps: steps until the rate reaches 0, > warmup_steps.
          warmup_lr: rate at step 0, <= base.
          warmup_steps: linear warmup length, >= 0.
          qat_start: first quantization-aware step, or None.
          qat_scale: factor applied from qat_start on, > 0.
        """
        super().__init__()
        if base <= 0 or total_steps <= warmup_steps or warmup_steps < 0 or warmup_lr > base:
            raise ValueError(
                "expected base > 0, total_steps > warmup_steps >= 0 and warmup_lr <= base; got "
                "base={} total_steps={} warmup_steps={} warmup_lr={}".format(
                    base, total_steps, warmup_steps, warmup_lr))
        self.base, self.total_steps = float(base), int(total_steps)
        self.warmup_lr, self.warmup_steps = float(warmup_lr), int(warmup_steps)
        self.qat_start, self.qat_scale = qat_start, float(qat_scale)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        progress = (step - self.warmup_steps) / float(self.total_steps - self.warmup_steps)
        cosine = 0.5 * self.base * (1.0 + tf.cos(math.pi * tf.minimum(progress, 1.0)))
        if self.warmup_steps > 0:
            slope = (self.base - self.warmup_lr) / self.warmup_steps
            cosine = tf.where(step < self.warmup_steps, self.warmup_lr + slope * step, cosine)
        lr = tf.where(step >= self.total_steps, 0.0, cosine)
        if self.qat_start is not None:
            lr = tf.where(step >= self.qat_start, lr * self.qat_scale, lr)
        return lr

    def get_config(self):
        return {"base": self.base, "total_steps": self.total_steps, "warmup_lr": self.warmup_lr,
                "warmup_steps": self.warmup_steps, "qat_start": self.qat_start,
                "qat_scale": self.qat_scale}


class FineTune(keras.optimizers.schedules.LearningRateSchedule):
    """The rate of `edgedet-train finetune`: linear warmup, then constant, from `start_step` on.

    The k-th fine-tuning step (k = 1, 2, ...) gets learning_rate * min(1, k / warmup_steps); the
    rate is 0 from total_steps on. No QAT factor: the whole segment is quantization-aware.
    """

    def __init__(self, start_step, learning_rate, warmup_steps, total_steps):
        super().__init__()
        self.start_step, self.learning_rate = int(start_step), float(learning_rate)
        self.warmup_steps, self.total_steps = int(warmup_steps), int(total_steps)

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        lr = tf.constant(self.learning_rate)
        if self.warmup_steps > 0:
            lr = lr * tf.minimum(1.0, (step - self.start_step + 1.0) / self.warmup_steps)
        return tf.where(step >= self.total_steps, 0.0, lr)

    def get_config(self):
        return {"start_step": self.start_step, "learning_rate": self.learning_rate,
                "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


def for_run(train_cfg, state):
    """The schedule of a run in `state` (state.json or None): its fine-tuning one, else the config's."""
    ft = (state or {}).get("fine_tune")
    if not ft:
        return from_config(train_cfg)
    return FineTune(ft["from_step"], ft["learning_rate"], ft["warmup_steps"], train_cfg.steps)


def from_config(train_cfg):
    """The schedule a training.config.TrainConfig asks for; inconsistent keys are a UserError."""
    t, q = train_cfg, train_cfg.quantization
    checks = [("train.learning_rate_base", t.learning_rate_base > 0, "> 0"),
              ("train.warmup_steps", 0 <= t.warmup_steps < t.steps,
               ">= 0 and < train.steps ({})".format(t.steps)),
              ("train.warmup_learning_rate", 0 <= t.warmup_learning_rate <= t.learning_rate_base,
               "between 0 and train.learning_rate_base ({})".format(t.learning_rate_base)),
              ("train.qat_learning_rate_scale", t.qat_learning_rate_scale > 0, "> 0"),
              ("train.fine_tune_learning_rate", t.fine_tune_learning_rate >= 0, ">= 0"),
              ("train.fine_tune_warmup_steps", t.fine_tune_warmup_steps >= 0, ">= 0"),
              ("train.quantization.delay", q.delay >= 0, ">= 0")]
    for key, ok, expected in checks:
        if not ok:
            raise UserError("config: {}: expected {}, got {}".format(
                key, expected, getattr(t if key.count(".") == 1 else q, key.split(".")[-1])))
    return WarmupCosine(t.learning_rate_base, t.steps, t.warmup_learning_rate, t.warmup_steps,
                        q.delay if q.enabled else None, t.qat_learning_rate_scale)


def rescaled(train_cfg, steps):
    """`train_cfg` run for `steps` steps on the same schedule, for `edgedet-train train --steps`.

    The warmup and the quantization delay scale by steps / train.steps, rounded and kept in
    [0, steps - 1]; the cosine decay spans train.steps, so it follows by itself. A delay at or past
    the old total (float-only training) stays past the new one.

    Args:
      train_cfg: a consistent training.config.TrainConfig (check it first).
      steps: the new total, >= 1, or None for no change.

    Returns:
      (TrainConfig, one-line note saying what changed, or None when nothing did).
    """
    if steps is None or steps == train_cfg.steps:
        return train_cfg, None
    if steps < 1:
        raise UserError("--steps: expected >= 1, got {}".format(steps))
    factor = steps / float(train_cfg.steps)
    q = train_cfg.quantization
    warmup = _scaled(train_cfg.warmup_steps, factor, steps)
    delay = steps if q.delay >= train_cfg.steps else _scaled(q.delay, factor, steps)
    new = replace(train_cfg, steps=steps, warmup_steps=warmup, quantization=replace(q, delay=delay))
    note = ("train: --steps {} rescales the config's {}-step schedule by {:.4g}: warmup_steps {} -> {}, "
            "quantization.delay {} -> {}".format(steps, train_cfg.steps, factor, train_cfg.warmup_steps,
                                                 warmup, q.delay, delay))
    return new, note


def _scaled(step, factor, total):
    """round(step * factor), kept in [0, total - 1]."""
    return min(max(int(round(step * factor)), 0), total - 1)
