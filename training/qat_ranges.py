"""Calibrated activation ranges for the start of a quantization-aware fine-tuning run.

tfmot's MovingAverageQuantizer starts every activation range at [-6, 6] and moves it towards the
batch's range by 0.1% per training step (ema_decay 0.999): after 1000 steps 37% of that start is
still in it. A run from scratch has the steps to get over it; a short fine-tuning run of a
finished model does not (on the OD API fixture, 300 steps at learning rate 0 left int8 mAP at
0.758 against the float 0.800). So `calibrate` sets each moving-average range to where the
average would settle: the mean of the batch ranges the quantizer sees on a few training batches.

The batch range is read back from one training-mode forward pass per batch: the quantizer
assigns min <- decay * min + (1 - decay) * batch_min, so batch_min = (min' - decay * min) /
(1 - decay). Ranges downstream depend on the quantization upstream, so this runs a few rounds.
Weight ranges (LastValueQuantizer) and the input range (AllValuesQuantizer) are left alone:
those quantizers take their range from the current values, not from an average.
"""

import numpy as np
import tensorflow as tf

EMA_DECAY = 0.999  # tfmot MovingAverageQuantizer's ema_decay (quantizers.py)
# Variables of MovingAverageQuantizers: layer outputs and QuantizeAwareActivation outputs.
RANGE_SUFFIXES = ("output_min:0", "output_max:0", "post_activation_min:0", "post_activation_max:0")
BATCHES = 4  # training batches per round
ROUNDS = 3   # enough for the ranges to stop moving (each round re-quantizes with the last)


def moving_average_ranges(model):
    """The min/max variables of every MovingAverageQuantizer in a tfmot-quantized Keras model."""
    return [v for v in model.variables if v.name.endswith(RANGE_SUFFIXES)]


def _batch_ranges(model, variables, images, strategy):
    """The range each of `variables` saw on `images` in one training-mode pass (on every replica of
    `strategy`, which all-reduces the range updates); afterwards every non-trainable variable
    (ranges, batch-norm statistics) is as it was."""
    state = [(v, v.numpy()) for v in model.non_trainable_variables]
    start = [v.numpy().astype(np.float64) for v in variables]
    strategy.run(model, args=(images,), kwargs={"training": True})
    seen = [(v.numpy() - EMA_DECAY * s) / (1.0 - EMA_DECAY) for v, s in zip(variables, start)]
    for v, value in state:
        v.assign(value)
    return seen


def calibrate(model, batches, strategy=None, rounds=ROUNDS):
    """Sets every moving-average activation range of `model` to its mean batch range.

    Args:
      model: tfmot-quantized tf_keras model; nothing but the ranges changes.
      batches: list of float32 [B, H, W, 3] model inputs in [-1, 1] (training images).
      strategy: the tf.distribute strategy `model` was made in (None: the default one).
      rounds: passes over `batches`.

    Returns:
      the number of range variables set.
    """
    variables = moving_average_ranges(model)
    strategy = strategy or tf.distribute.get_strategy()
    for _ in range(rounds):
        seen = [_batch_ranges(model, variables, images, strategy) for images in batches]
        for i, v in enumerate(variables):
            v.assign(np.mean([s[i] for s in seen], axis=0).astype(np.float32))
    for v in variables:  # the quantizer keeps 0 inside every range: a solve that breaks it is a bug
        value = v.numpy()
        bad = np.any(value > 1e-3) if v.name.endswith("min:0") else np.any(value < -1e-3)
        assert not bad, "{}: solved range {} does not contain 0 (ema_decay not {}?)".format(
            v.name, value, EMA_DECAY)
    return len(variables)
