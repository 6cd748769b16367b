"""`edgedet-train finetune`: continue a workdir quantization-aware, at the fine-tuning rate.

    edgedet-train finetune --workdir DIR --steps N [--learning-rate LR]

The OD API's fine_tune_checkpoint workflow, on an edgedet workdir: the start is the workdir's last
checkpoint (import-checkpoint's OD API weights, or any float or quantization-aware run) at its step
S. From there the run trains N more steps, quantization-aware from the first one, at
train.fine_tune_learning_rate (linear warmup over train.fine_tune_warmup_steps, then constant;
schedule.FineTune), with the start's batch-norm statistics kept when
train.fine_tune_freeze_batchnorm is set, and from activation ranges calibrated on a few training
batches (training.qat_ranges). Nothing of the config's own schedule is used: its warmup and
cosine belong to training from scratch, and the float phase is over.

Before the first step the workdir's config.yaml gets train.steps = S + N and quantization from S,
and state.json (still naming the start's checkpoint) gets the segment
{"from_step", "steps", "learning_rate", "warmup_steps", "freeze_batchnorm"}; every later
checkpoint's state.json keeps it. So an interrupted fine-tuning run continues on the same
schedule with `edgedet-train train --config DIR/config.yaml --workdir DIR --resume`.
"""

import argparse
import os

from app import arguments
from app.config import replace
from app.errors import UserError


def add_arguments(parser):
    parser.add_argument("--workdir", required=True, type=arguments.input_dir,
                        help="edgedet workdir to continue (import-checkpoint's, or a training run's)")
    parser.add_argument("--steps", required=True, type=arguments.integer(1, 10 ** 9),
                        help="fine-tuning steps to run from the workdir's last checkpoint")
    parser.add_argument("--learning-rate", type=arguments.number(0, 1),
                        help="override train.fine_tune_learning_rate")
    parser.add_argument("--skip-bad", action="store_true", help="skip corrupt records (counted)")


def fine_tune_config(cfg, from_step, steps):
    """`cfg` ending `steps` after `from_step`, quantization-aware from `from_step` on."""
    t = cfg.train
    quantization = replace(t.quantization, enabled=True, delay=from_step)
    return replace(cfg, train=replace(t, steps=from_step + steps, quantization=quantization))


def segment(train_cfg, from_step, steps, learning_rate=None):
    """The state.json record of a fine-tuning run (schedule.for_run reads it back)."""
    lr = train_cfg.fine_tune_learning_rate if learning_rate is None else learning_rate
    return {"from_step": from_step, "steps": steps, "learning_rate": lr,
            "warmup_steps": train_cfg.fine_tune_warmup_steps,
            "freeze_batchnorm": train_cfg.fine_tune_freeze_batchnorm}


def start(workdir, steps, learning_rate=None):
    """Rewrites the workdir's config.yaml and state.json for a fine-tuning run (see the module doc).

    Returns:
      the state.json dict written.

    Raises:
      UserError: no run in `workdir`, or train keys that cannot work together.
    """
    from training import train, workdir as run_dir
    state = run_dir.read_state(workdir)
    if state is None:
        raise UserError("--workdir {}: no {} (no checkpoint to fine-tune). Make one with edgedet-train "
                        "import-checkpoint or train.".format(workdir, run_dir.STATE_FILE))
    cfg = run_dir.read_config(workdir)
    tuned = fine_tune_config(cfg, int(state["step"]), steps)
    train.check_train_config(tuned.train)
    state = dict(state, fine_tune=segment(cfg.train, int(state["step"]), steps, learning_rate))
    run_dir.prepare(workdir, tuned, resume=True)
    run_dir.write_state(workdir, state)
    return state


def run(args):
    from training import train, workdir as run_dir
    state = start(args.workdir, args.steps, args.learning_rate)
    ft = state["fine_tune"]
    print("finetune: {} steps from step {} of {}, quantization-aware, learning rate {:g} (warmup {} steps)"
          "{}".format(ft["steps"], ft["from_step"], args.workdir, ft["learning_rate"], ft["warmup_steps"],
                      ", batch norm frozen" if ft["freeze_batchnorm"] else ""))
    return train.run(argparse.Namespace(
        config=os.path.join(args.workdir, run_dir.CONFIG_FILE), workdir=args.workdir, steps=None,
        data=None, resume=True, skip_bad=args.skip_bad))
