"""Which tf.distribute strategy trains, which worker writes the run, where the others write.

One machine: MirroredStrategy over several GPUs, or over CPU replicas (training/cpu_replicas.py,
`distribute.cpu_replicas`) on a CPU-only host, else the default strategy. TF_CONFIG
set: MultiWorkerMirroredStrategy, one process per machine, all passing the same --workdir
(shared storage, or a copy of the chief's workdir at the same path).

Only the chief (task "chief", else "worker" 0) writes the run: checkpoints, state.json,
config.yaml and TensorBoard events. The other workers still take part in every save (reading
batch-norm statistics is a collective), so, as TensorFlow's multi-worker convention has it,
they save into `<workdir>/workertemp_<task id>/`, which is removed after each save.

A peer that dies is noticed by TensorFlow (see PEER_ERRORS). A peer that is alive but stuck is
not: its heartbeats go on, and a collective waits for it forever. StepWatchdog bounds that wait.
A peer that never starts keeps the others in the cluster join; JoinGuard bounds that one.
"""

import json
import os
import re
import shutil
import sys
import threading
import time

import tensorflow as tf

from app.errors import UserError
from training import cpu_replicas
from training.join_guard import JoinGuard

# What a collective raises when a peer worker is gone: a dead peer stops sending the
# coordination service's heartbeats, which aborts the collectives (measured: 12-26 s after a
# kill). No CommunicationOptions(timeout_seconds): it starts a thread per collective, and a
# QAT run on 2 workers died of it ("Resource temporarily unavailable") at its final save.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError)


def choose_strategy(distribute_cfg, train_cfg, start_step=0):
    """MultiWorkerMirrored with TF_CONFIG, Mirrored with several GPUs or CPU replicas, else the
    default strategy.

    Joining a multi-worker cluster waits for every worker of TF_CONFIG; a worker still waiting
    after `distribute_cfg.join_timeout_s` seconds exits 1 with one line (join_guard.JoinGuard).
    A CPU-only host splits each batch of a run of `train_cfg` (from `start_step`) over
    `distribute_cfg.cpu_replicas`.
    """
    if os.environ.get("TF_CONFIG"):
        return _join_cluster(distribute_cfg.join_timeout_s)
    if tf.config.list_physical_devices("GPU"):
        gpus = len(tf.config.list_logical_devices("GPU"))
        return tf.distribute.MirroredStrategy() if gpus > 1 else tf.distribute.get_strategy()
    return (cpu_replicas.strategy(distribute_cfg.cpu_replicas, train_cfg, start_step)
            or tf.distribute.get_strategy())


def _join_cluster(join_timeout_s):
    with JoinGuard(join_timeout_s, _join_line(join_timeout_s, "distribute.join_timeout_s")):
        return tf.distribute.MultiWorkerMirroredStrategy()


def _join_line(seconds, key):
    return ("edgedet-train: error: not every worker of TF_CONFIG joined within {:g} s ({}): start "
            "the other workers ({}), check that this machine reaches their addresses, or raise {}."
            .format(seconds, key, _cluster_addresses(), key))


def _cluster_addresses():
    """The cluster's "type index: address" list from TF_CONFIG, for the join error."""
    cluster = json.loads(os.environ.get("TF_CONFIG", "{}")).get("cluster", {})
    return ", ".join("{} {}: {}".format(kind, i, address) for kind, addresses in sorted(cluster.items())
                     for i, address in enumerate(addresses))


def check_config(distribute_cfg, batch_size):
    """Raises UserError unless every bound of the `distribute` section is > 0 seconds and
    `cpu_replicas` splits `batch_size`."""
    for key in ("peer_timeout_s", "startup_timeout_s", "join_timeout_s"):
        value = getattr(distribute_cfg, key)
        if not value > 0:
            raise UserError("config: distribute.{}: expected > 0 seconds, got {}".format(key, value))
    cpu_replicas.check_setting(distribute_cfg.cpu_replicas, batch_size)


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


class StepWatchdog:
    """Ends this worker with one line on stderr and exit 1 when a call outlives its bound.

    The trainer calls `expect` before every call that joins collectives (train steps, evaluation,
    checkpoints). The main thread is then blocked inside a collective, which Python cannot
    interrupt, so the watchdog thread ends the process itself (os._exit): checkpoints and
    state.json are written atomically, so the run resumes from the last complete one.
    """

    def __init__(self, message, poll_s=1.0):
        """`message(seconds, key)` -> the line for a call that took longer than `seconds`
        (the bound of config key `key`); `poll_s`: how often the deadline is checked."""
        self._message, self._poll_s = message, poll_s
        self._lock, self._stopped = threading.Lock(), threading.Event()
        self._deadline, self._bound = None, None
        self._thread = threading.Thread(target=self._watch, name="step-watchdog", daemon=True)
        self._thread.start()

    def expect(self, seconds, key):
        """The next call must end within `seconds` from now (until the next `expect`)."""
        with self._lock:
            self._deadline, self._bound = time.monotonic() + seconds, (seconds, key)

    def stop(self):
        self._stopped.set()
        self._thread.join()

    def _watch(self):
        while not self._stopped.wait(self._poll_s):
            with self._lock:
                late = self._deadline is not None and time.monotonic() > self._deadline
            if late:
                sys.stderr.write(self._message(*self._bound) + "\n")
                sys.stderr.flush()
                os._exit(1)


class NoWatchdog:
    """What a single process uses instead: nothing to wait for but itself."""

    def expect(self, seconds, key):
        pass

    def stop(self):
        pass


def step_watchdog(strategy, message):
    """A StepWatchdog under MultiWorkerMirroredStrategy, else a NoWatchdog."""
    return StepWatchdog(message) if is_multi_worker(strategy) else NoWatchdog()
