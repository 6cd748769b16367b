"""Which tf.distribute strategy trains, which worker writes the run, where the others write.

One machine, one device: the default strategy. Several GPUs: MirroredStrategy. TF_CONFIG
set: MultiWorkerMirroredStrategy, one process per machine, all passing the same --workdir
(shared storage, or a copy of the chief's workdir at the same path).

Only the chief (task "chief", else "worker" 0) writes the run: checkpoints, state.json,
config.yaml and TensorBoard events. The other workers still take part in every save (reading
batch-norm statistics is a collective), so, as TensorFlow's multi-worker convention has it,
they save into `<workdir>/workertemp_<task id>/`, which is removed after each save.
"""

import os
import re
import shutil

import tensorflow as tf

# What a collective raises when a peer worker is gone: a dead peer stops sending the
# coordination service's heartbeats, which aborts the collectives (measured: 12-26 s after a
# kill). No CommunicationOptions(timeout_seconds): it starts a thread per collective, and a
# QAT run on 2 workers died of it ("Resource temporarily unavailable") at its final save.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


def choose_strategy():
    """MultiWorkerMirrored with TF_CONFIG, Mirrored with several GPUs, else the default strategy."""
    if os.environ.get("TF_CONFIG"):
        return tf.distribute.MultiWorkerMirroredStrategy()
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def is_chief(strategy):
    """True on the one worker that writes the run (always true outside multi-worker)."""
    return strategy.extended.should_checkpoint


def is_multi_worker(strategy):
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)


def peer_error_line(error):
    """The line of a collective's error that names the cause, without its "{{function_node ...}}"."""
    lines = [re.sub(r"^\{\{.*?\}\}\s*", "", line.strip()) for line in error.message.splitlines()
             if line.strip()]
    named = [line for line in lines if "task" in line or "timed out" in line.lower()]
    return (named or lines or ["no message"])[0][:300]


def write_dir(workdir, strategy):
    """`workdir` on the chief, `<workdir>/workertemp_<task id>` on the other workers."""
    if is_chief(strategy):
        return workdir
    return os.path.join(workdir, "workertemp_{}".format(strategy.cluster_resolver.task_id))


def remove_worker_dir(workdir, strategy):
    """Deletes a non-chief worker's temporary dir (nothing on the chief)."""
    if not is_chief(strategy):
        shutil.rmtree(write_dir(workdir, strategy), ignore_errors=True)
