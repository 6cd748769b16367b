"""A training run's folder: config.yaml, state.json, checkpoints/, tb/.

state.json is the commit point of a checkpoint: it names the checkpoint written
last and is replaced atomically only after that checkpoint is complete, so a
crash mid-save leaves the previous (checkpoint, state) pair intact.
"""

import json
import os

from app.errors import UserError
from training import config as training_config

STATE_FILE = "state.json"
CONFIG_FILE = "config.yaml"
CHECKPOINTS = "checkpoints"
TENSORBOARD = "tb"
# state.json keys a run keeps from save to save: where it was imported from, and a fine-tuning
# segment (training.finetune.segment), whose schedule and frozen batch norm a resume must keep.
CARRIED_STATE = ("imported_from", "fine_tune")


def write_atomic(path, text):
    """Writes `text` to `path` via a temp file and os.replace."""
    tmp = "{}.tmp{}".format(path, os.getpid())
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_state(workdir):
    """The run state dict {"step", "phase", "quantization_aware", "checkpoint", ...}, or None."""
    path = os.path.join(workdir, STATE_FILE)
    if not os.path.exists(path):
        return None
    try:
        with open(path) as f:
            state = json.load(f)
    except (IOError, OSError, ValueError) as e:
        raise UserError("{}: unreadable run state ({}). Delete the workdir or restore the file."
                        .format(path, e))
    if not isinstance(state, dict) or state.get("phase") not in ("float", "qat"):
        raise UserError("{}: not an edgedet run state (no phase float|qat)".format(path))
    return state


def write_state(workdir, state):
    write_atomic(os.path.join(workdir, STATE_FILE), json.dumps(state, indent=2, sort_keys=True))


def write_config(workdir, cfg):
    """Stores the config a run trains with (commented YAML, loadable by load_config)."""
    write_atomic(os.path.join(workdir, CONFIG_FILE),
                 "# The config this run was trained with (written by edgedet-train train).\n"
                 + training_config.render_config(cfg))


def read_config(workdir):
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise UserError("{}: missing; {} is not an edgedet training workdir. Pass the --workdir "
                        "a training run wrote.".format(path, workdir))
    return training_config.load_config(path)


def prepare(workdir, cfg, resume, write=True):
    """Creates or reopens a workdir; returns the state to resume from, or None.

    A new run refuses a workdir that already holds one (no silent overwrite); a
    resumed run must use the same model section as the stored config. With
    `write=False` (a multi-worker run's non-chief workers) it only checks and reads.
    """
    state = read_state(workdir)
    if state is not None and not resume:
        raise UserError("{}: already holds a training run (step {}). Pass --resume to continue it "
                        "or choose another --workdir.".format(workdir, state["step"]))
    if resume and state is None:
        raise UserError("{}: nothing to resume (no {}). Drop --resume to start a new run."
                        .format(workdir, STATE_FILE))
    if state is not None:
        stored = read_config(workdir)
        if stored.model != cfg.model:
            raise UserError("{}: the model section of --config differs from the run's {}; resume "
                            "with the same model settings.".format(workdir, CONFIG_FILE))
    if not write:
        return state
    os.makedirs(os.path.join(workdir, CHECKPOINTS), exist_ok=True)
    write_config(workdir, cfg)
    return state
