"""Training on a CPU-only host as several replicas, one per core, like one replica per GPU.

TensorFlow's default on a CPU runs one op at a time over every core (intra-op threads). The
ops of an SSD train step are small: at the demo size (192x224, depth 0.5, batch 8) on 2 cores,
a step took 80 ms and 138 CPU ms this way, and 60 ms and 117 CPU ms as 2 replicas of 4 images on
one thread each (MirroredStrategy over logical CPU devices; benchmarks/train_speed.py). The batch
and the gradients are the same; batch-norm statistics are per replica, as on several GPUs, so
`auto` keeps at least MIN_REPLICA_BATCH images on each. Two replicas trace and compile slower
(+6 s for the float step, +14 s for the quantization-aware one, whose steps gain little), so
`auto` splits only runs with at least MIN_SPLIT_STEPS float steps.

Logical devices and thread counts can only be set before TensorFlow starts in this process;
after that (a second model trained in one process), the devices made by the first call serve.
"""

import os

import tensorflow as tf

from app.errors import UserError

# The fewest images per replica `auto` leaves (each replica's batch-norm statistics).
MIN_REPLICA_BATCH = 4
# The fewest float steps `auto` splits: at ~15 ms saved a step, what pays for the slower traces.
MIN_SPLIT_STEPS = 2000
KEY = "distribute.cpu_replicas"


def host_cores():
    """CPU cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def replica_count(setting, batch_size, cores, float_steps):
    """Replicas for `setting` ("auto" or a count): auto is 1 for fewer than MIN_SPLIT_STEPS
    `float_steps`, else the most, up to `cores`, that split `batch_size` evenly into at least
    MIN_REPLICA_BATCH images each (1 if none does)."""
    if setting != "auto":
        return int(setting)
    if float_steps < MIN_SPLIT_STEPS:
        return 1
    fits = [n for n in range(1, cores + 1) if batch_size % n == 0 and batch_size // n >= MIN_REPLICA_BATCH]
    return max(fits or [1])


def check_setting(setting, batch_size):
    """Raises UserError unless `setting` is auto or a count >= 1 that divides `batch_size`."""
    if setting == "auto":
        return
    if not setting.isdigit() or int(setting) < 1:
        raise UserError("config: {}: expected auto or a whole number >= 1, got {!r}".format(KEY, setting))
    if batch_size % int(setting):
        raise UserError("config: {}: {} replicas cannot split train.batch_size {} evenly; pick a divisor "
                        "of it or auto".format(KEY, setting, batch_size))


def cpu_devices(count):
    """Names of `count` logical CPU devices, made now with the cores shared out among them as
    intra-op threads, or of those TensorFlow already has if it has started (fewer if it has fewer)."""
    try:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0], [tf.config.LogicalDeviceConfiguration()] * count)
        tf.config.threading.set_intra_op_parallelism_threads(max(1, host_cores() // count))
    except RuntimeError:  # TensorFlow has started in this process
        pass
    return [d.name for d in tf.config.list_logical_devices("CPU")][:count]


def float_steps(train_cfg, start_step=0):
    """The float steps a run of `train_cfg` has left from `start_step` (all of its steps without
    quantization-aware training)."""
    q = train_cfg.quantization
    return max(0, (min(train_cfg.steps, q.delay) if q.enabled else train_cfg.steps) - start_step)


def run_replicas(setting, train_cfg, start_step=0):
    """The replicas `setting` gives a run of `train_cfg` from `start_step` on this host."""
    return replica_count(setting, train_cfg.batch_size, host_cores(), float_steps(train_cfg, start_step))


def strategy(setting, train_cfg, start_step=0):
    """MirroredStrategy over the CPU replicas `setting` asks for a run of `train_cfg` from
    `start_step`, or None for one."""
    count = run_replicas(setting, train_cfg, start_step)
    devices = cpu_devices(count) if count > 1 else []
    return tf.distribute.MirroredStrategy(devices) if len(devices) > 1 else None
