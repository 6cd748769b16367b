"""`edgedet-train train`: float training, then quantization-aware training, under tf.distribute.

The run reads top to bottom in `Trainer.fit`: build the float SSD, train it for
`quantization.delay` steps, wrap it with tfmot's quantize_model (the float
weights carry over) and continue quantization-aware to `train.steps`.
Checkpoints land every `checkpoint_every` steps; state.json (written after the
checkpoint, atomically) says which one is current, so `--resume` continues from
a complete checkpoint, also across the float -> QAT boundary.

Loss normalization uses the global number of matched anchors, so N replicas
compute exactly the single-device step on the same global batch. With several
workers only the chief writes the run (training.distribute).
"""

import os
import sys
import time

import tensorflow as tf
import tensorflow_model_optimization as tfmot
import tf_keras as keras

from app.model import anchors as app_anchors
from app import arguments
from app.errors import UserError
from training import config as training_config, conv_gradients, distribute
from training import losses, model as ssd_model, qat_ranges, schedule, workdir as run_dir
from training.data import augment, pipeline

# Most train steps fused into one tf.function call (fewer Python round trips).
MAX_STEPS_PER_CALL = 10
KEPT_CHECKPOINTS = 3  # the newest checkpoints a run keeps (tf.train.CheckpointManager max_to_keep)


class TrainingDiverged(Exception):
    """The loss or the weights became NaN or inf."""


def add_arguments(parser):
    parser.add_argument("--config", default="config.yaml", type=arguments.input_file, help="config.yaml to train with")
    parser.add_argument("--workdir", type=arguments.output_dir, help="run folder (default runs/<config name>)")
    parser.add_argument("--steps", type=arguments.integer(1, 10 ** 9), help="override train.steps")
    parser.add_argument("--data", type=arguments.input_dir, help="folder laid out as `edgedet-train synth` writes it; "
                        "overrides the data paths of the config")
    parser.add_argument("--resume", action="store_true", help="continue the run in --workdir")
    parser.add_argument("--skip-bad", action="store_true", help="skip corrupt records (counted)")


def config_with_overrides(cfg, data_dir=None, steps=None, skip_bad=False, out=None, resume=False):
    """Applies the CLI overrides (--data, --steps, --skip-bad) to a loaded config.

    The config must be consistent as written; --steps then rescales its schedule
    (schedule.rescaled) and says so on `out` (default: stdout). With `resume` the run's
    schedule so far stays as it was: --steps only moves the end (the run continues to it).
    """
    from training.data import dataset as data_io

    data = data_io.with_data_dir(cfg.data, data_dir) if data_dir else cfg.data
    if skip_bad:
        data = training_config.app_config.replace(data, skip_bad=True)
    if cfg.train.steps < 1:
        raise UserError("config: train.steps: expected >= 1, got {}".format(cfg.train.steps))
    check_train_config(cfg.train)
    distribute.check_config(cfg.distribute, cfg.train.batch_size)
    if resume and steps is not None:
        train_cfg = training_config.app_config.replace(cfg.train, steps=steps)
        check_train_config(train_cfg)
    else:
        train_cfg, note = schedule.rescaled(cfg.train, steps)
        if note:
            print(note, file=out or sys.stdout)
    return training_config.app_config.replace(cfg, data=data, train=train_cfg)


def check_train_config(train_cfg):
    """Raises UserError for train keys that cannot work together, before anything is written."""
    schedule.from_config(train_cfg)
    augment.check_config(train_cfg)
    for key in ("checkpoint_every", "log_every", "batch_size"):
        if getattr(train_cfg, key) < 1:
            raise UserError("config: train.{}: expected >= 1, got {}".format(
                key, getattr(train_cfg, key)))


def make_optimizer(train_cfg, start_step=0, lr_schedule=None):
    """Momentum SGD on `lr_schedule` (default: the config's warmup cosine), its step counter at
    `start_step`."""
    opt = keras.optimizers.SGD(learning_rate=lr_schedule or schedule.from_config(train_cfg),
                               momentum=train_cfg.momentum)
    opt.iterations.assign(start_step)
    return opt


def quantize(float_model):
    """tfmot quantization-aware copy of a float Keras model (weights carried over)."""
    return tfmot.quantization.keras.quantize_model(float_model)


def make_train_step(model, optimizer, strategy, train_cfg, matmul_gradients=False):
    """A compiled function running `n` train steps on a distributed iterator.

    The replica step is traced inline into the one tf.function, never as a nested
    tf.function: tfmot's fake-quant range updates (`assign_moving_average`) and the
    optimizer are synchronization points (`merge_call`), which MirroredStrategy and
    MultiWorkerMirroredStrategy refuse inside a graph of its own. The `n` steps are a
    `tf.range` loop around `strategy.run`, so no sync point sits in control flow
    inside a replica.

    Args:
      model: the SSD (float or quantization-aware), created in `strategy.scope()`.
      optimizer: its optimizer, created in the same scope.
      strategy: a tf.distribute.Strategy.
      train_cfg: training.config.TrainConfig-like (loss settings).
      matmul_gradients: trace the model's 1x1 convolutions with matrix-product gradients
        (training.conv_gradients; the float phase: the same model, less CPU per step).

    Returns:
      fn(iterator, n) -> dict of float32 scalars of the last step: loss,
      classification, localization, regularization.
    """
    num_replicas = strategy.num_replicas_in_sync

    def replica_step(images, targets):
        ctx = tf.distribute.get_replica_context()
        matches = ctx.all_reduce(tf.distribute.ReduceOp.SUM, tf.reduce_sum(targets["box_weights"]))
        with tf.GradientTape() as tape:
            boxes, logits = model(images, training=True)
            parts = losses.ssd_loss(boxes, logits, targets, train_cfg, tf.maximum(matches, 1.0))
            # Summed over replicas, each replica's share adds up to the model's regularization.
            parts["regularization"] = tf.add_n(model.losses) / num_replicas
            total = parts["classification"] + parts["localization"] + parts["regularization"]
        grads = tape.gradient(total, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return parts

    @tf.function
    def train_steps(iterator, n):
        zero = tf.constant(0.0, keras.backend.floatx())  # float64 in the strategy test
        parts = {k: zero for k in ("classification", "localization", "regularization")}
        # Entered once, around the whole trace: the replicas trace in threads of their own.
        with conv_gradients.matmul_gradients(model, enabled=matmul_gradients):
            for _ in tf.range(n):
                per_replica = strategy.run(replica_step, args=next(iterator))
                parts = {k: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None)
                         for k, v in per_replica.items()}
        parts["loss"] = parts["classification"] + parts["localization"] + parts["regularization"]
        return parts

    return train_steps


def _all_finite(model):
    """True when every variable (weights and batch-norm moving statistics) is finite."""
    return all(bool(tf.reduce_all(tf.math.is_finite(v))) for v in model.variables
               if v.dtype.is_floating)


def _try_evaluate(model, cfg, eval_examples):
    """COCO metrics via training.evaluate when it exists and eval data is given, else None."""
    if not eval_examples:
        return None
    try:
        from training import evaluate
    except ImportError:
        return None
    preds = evaluate.predict_keras(model, eval_examples, cfg)
    return evaluate.coco_metrics(eval_examples, preds, len(cfg.model.labels))


class Trainer:
    """Holds the model, optimizer, checkpoint and compiled step of the current phase."""

    def __init__(self, cfg, workdir, strategy, out=sys.stdout, lr_schedule=None):
        self.cfg, self.workdir, self.strategy, self.out = cfg, workdir, strategy, out
        self.step, self.phase, self.last_saved = 0, "float", None
        self.carried = {}  # state.json keys kept from save to save (workdir.CARRIED_STATE)
        self.chief = distribute.is_chief(strategy)
        self.schedule = lr_schedule or schedule.from_config(cfg.train)
        # The logged values are reduced already: nothing collective to keep in step on the others.
        self.writer = (tf.summary.create_file_writer(os.path.join(workdir, run_dir.TENSORBOARD))
                       if self.chief else tf.summary.create_noop_writer())
        with strategy.scope():
            self.model = ssd_model.build_ssd(cfg.model)
        self._new_phase_objects(0)
        self.watchdog = distribute.step_watchdog(strategy, self._stuck_line)

    def _new_phase_objects(self, start_step):
        with self.strategy.scope():
            self.optimizer = make_optimizer(self.cfg.train, start_step, self.schedule)
        self.checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(distribute.write_dir(self.workdir, self.strategy), run_dir.CHECKPOINTS),
            max_to_keep=KEPT_CHECKPOINTS)
        self.train_steps = make_train_step(self.model, self.optimizer, self.strategy,
                                           self.cfg.train, matmul_gradients=self.phase == "float")
        self.traced = False  # the first call of a phase traces and compiles

    def start_qat(self):
        """Float -> quantization-aware: wrap the trained float model, fresh optimizer (batch norm
        frozen when a fine-tuning run asks for it)."""
        with self.strategy.scope():
            self.model = quantize(self.model)
        if self.carried.get("fine_tune", {}).get("freeze_batchnorm"):
            ssd_model.freeze_batchnorm(self.model)
        self.phase = "qat"
        self._new_phase_objects(self.step)

    def _calibrate_fine_tune_ranges(self, iterator):
        """A fine-tuning run that starts quantization-aware here starts from calibrated activation
        ranges (training.qat_ranges), on the first replica's next few training batches."""
        fine_tune = self.carried.get("fine_tune")
        if not fine_tune or self.step != fine_tune["from_step"]:
            return
        batches = [self.strategy.experimental_local_results(next(iterator)[0])[0]
                   for _ in range(qat_ranges.BATCHES)]
        qat_ranges.calibrate(self.model, batches, self.strategy)

    def restore(self, state):
        """Loads the checkpoint state.json names (switching to QAT first if it is one)."""
        self.carried = {k: state[k] for k in run_dir.CARRIED_STATE if k in state}
        if state["phase"] == "qat":
            self.start_qat()
        path = os.path.join(self.workdir, run_dir.CHECKPOINTS, state["checkpoint"])
        self.checkpoint.restore(path).assert_existing_objects_matched()
        self.step, self.last_saved = int(state["step"]), int(state["step"])

    def save(self, extra=None):
        """Checkpoint + state.json on the chief; every worker must call it (collective reads)."""
        if not _all_finite(self.model):
            raise TrainingDiverged("weights became NaN or inf")
        path = self.manager.save(checkpoint_number=self.step)
        self.last_saved = self.step
        if not self.chief:
            distribute.remove_worker_dir(self.workdir, self.strategy)
            return
        state = {"step": self.step, "phase": self.phase, "checkpoint": os.path.basename(path),
                 "quantization_aware": self.phase == "qat"}
        state.update(self.carried)
        state.update(extra or {})
        run_dir.write_state(self.workdir, state)

    def _next_stop(self):
        """The next step where something other than training happens."""
        t = self.cfg.train
        stops = [t.steps, self.step + MAX_STEPS_PER_CALL]
        for every in (t.log_every, t.checkpoint_every, t.eval_every):
            if every > 0:
                stops.append((self.step // every + 1) * every)
        if self.phase == "float" and t.quantization.enabled and t.quantization.delay > self.step:
            stops.append(t.quantization.delay)
        return min(stops)

    def _expect_slow(self):
        """Bounds the next call by distribute.startup_timeout_s (evaluation, a save, a trace)."""
        self.watchdog.expect(self.cfg.distribute.startup_timeout_s, "distribute.startup_timeout_s")

    def _stuck_line(self, seconds, key):
        # From memory: the workdir may be on the hung file system that stalled the peer.
        return ("edgedet-train: error: a call of this worker took over {:g} s ({}): a peer worker is "
                "stuck, or the steps are slower than that on this cluster; raise {} if so ({} in {}). "
                "Restart every worker with --resume.".format(
                    seconds, key, key, _checkpoint_note(self.last_saved), self.workdir))

    def _run_steps(self, iterator, n):
        """`n` train steps, under the watchdog's bound for them."""
        if self.traced:
            self.watchdog.expect(self.cfg.distribute.peer_timeout_s, "distribute.peer_timeout_s")
        else:
            self._expect_slow()
        parts = self.train_steps(iterator, tf.constant(n))
        self.traced = True
        return parts

    def _log(self, parts, images_per_s):
        lr = float(self.schedule(self.step - 1))  # the rate of the step just taken
        values = {k: float(v) for k, v in parts.items()}
        with self.writer.as_default(step=self.step):
            for k, v in values.items():
                tf.summary.scalar("loss/" + k, v)
            tf.summary.scalar("learning_rate", lr)
            tf.summary.scalar("images_per_second", images_per_s)
        self.out.write("step {}/{}  loss {:.4f} (cls {:.4f} loc {:.4f} reg {:.4f})  lr {:.5f}  "
                       "{:.1f} img/s  {}\n".format(
                           self.step, self.cfg.train.steps, values["loss"], values["classification"],
                           values["localization"], values["regularization"], lr, images_per_s,
                           self.phase))
        self.out.flush()

    def _evaluate(self, eval_examples):
        metrics = _try_evaluate(self.model, self.cfg, eval_examples)
        if metrics is None:
            return {}
        with self.writer.as_default(step=self.step):
            for key in ("map", "map50"):
                tf.summary.scalar("eval/" + key, metrics[key])
        self.out.write("step {}  eval mAP {:.4f}  mAP@0.5 {:.4f}\n".format(
            self.step, metrics["map"], metrics["map50"]))
        return {"eval": {k: float(metrics[k]) for k in ("map", "map50")}}

    def fit(self, iterator, eval_examples=None):
        """Trains to cfg.train.steps; raises TrainingDiverged on a NaN/inf loss."""
        try:
            self._fit(iterator, eval_examples)
        finally:
            self.watchdog.stop()

    def _fit(self, iterator, eval_examples):
        t = self.cfg.train
        mark, images = time.time(), 0
        while self.step < t.steps:
            if (self.phase == "float" and t.quantization.enabled
                    and self.step >= t.quantization.delay):
                self.start_qat()
                self._calibrate_fine_tune_ranges(iterator)
            n = self._next_stop() - self.step
            parts = self._run_steps(iterator, n)
            if not bool(tf.math.is_finite(parts["loss"])):
                raise TrainingDiverged("loss became {} at step ~{}".format(
                    float(parts["loss"]), self.step + n))
            self.step += n
            images += n * t.batch_size
            if self.step % t.log_every == 0 or self.step == t.steps:
                now = time.time()
                self._log(parts, images / max(now - mark, 1e-9))
                mark, images = now, 0
            extra = {}
            self._expect_slow()
            if t.eval_every and self.step % t.eval_every == 0 and self.step < t.steps:
                extra = self._evaluate(eval_examples)
            if self.step % t.checkpoint_every == 0 or self.step == t.steps:
                if self.step == t.steps:
                    extra = self._evaluate(eval_examples)
                self.save(extra)
        self.writer.flush()


def train(cfg, workdir, decoded, cache=False, eval_examples=None, resume=False, strategy=None,
          out=sys.stdout):
    """Runs (or resumes) a training run in `workdir`.

    Args:
      cfg: training.config.Config.
      workdir: run folder (see training.workdir).
      decoded: tf.data.Dataset of decoded training examples (pipeline.train_dataset).
      cache: cache the decoded images in memory.
      eval_examples: Examples for the eval mAP (needs training.evaluate), or None.
      resume: continue from the checkpoint in state.json.
      strategy: tf.distribute strategy; None picks one (distribute.choose_strategy).
      out: where progress lines go.

    Returns:
      The Trainer after the last step.
    """
    check_train_config(cfg.train)
    distribute.check_config(cfg.distribute, cfg.train.batch_size)
    strategy = strategy or distribute.choose_strategy(cfg.distribute, cfg.train, _start_step(workdir, resume))
    state = run_dir.prepare(workdir, cfg, resume, write=distribute.is_chief(strategy))
    replicas = strategy.num_replicas_in_sync
    if replicas > 1:
        out.write("training on {} replicas of {} images each\n".format(replicas, cfg.train.batch_size // replicas))
    anchors = app_anchors.anchors_from_config(cfg.model)
    dataset = pipeline.train_dataset(decoded, cfg, anchors, cfg.train.batch_size, cache=cache,
                                     seed=cfg.train.seed)
    iterator = iter(strategy.experimental_distribute_dataset(dataset))
    trainer = Trainer(cfg, workdir, strategy, out, schedule.for_run(cfg.train, state))
    if state is not None:
        trainer.restore(state)
        out.write("resumed {} at step {} ({})\n".format(workdir, trainer.step, trainer.phase))
    trainer.fit(iterator, eval_examples)
    return trainer


def restore_model(workdir):
    """The trained model of a run, for evaluation and export.

    Returns:
      (keras_model, cfg, state): the quantization-aware model if state["phase"]
      is "qat", else the float one; cfg from workdir/config.yaml; state.json.

    Raises:
      UserError: no checkpoint, or a checkpoint that does not fit config.yaml.
    """
    state = run_dir.read_state(workdir)
    if state is None:
        raise UserError("{}: no {} (no checkpoint). Train first with edgedet-train train "
                        "--workdir {}.".format(workdir, run_dir.STATE_FILE, workdir))
    cfg = run_dir.read_config(workdir)
    model = ssd_model.build_ssd(cfg.model)
    if state["phase"] == "qat":
        model = quantize(model)
    path = os.path.join(workdir, run_dir.CHECKPOINTS, state["checkpoint"])
    try:
        tf.train.Checkpoint(model=model).restore(path).expect_partial().assert_existing_objects_matched()
    except (AssertionError, ValueError, tf.errors.OpError) as e:
        raise UserError("{}: checkpoint does not fit {} ({}). Restore the config the run was "
                        "trained with.".format(path, os.path.join(workdir, run_dir.CONFIG_FILE),
                                               str(e).splitlines()[0][:200]))
    return model, cfg, state


def _start_step(workdir, resume):
    """The step a run starts from: its state.json's when resuming (0 without one), else 0."""
    state = run_dir.read_state(workdir) if resume else None
    return int(state["step"]) if state else 0


def _checkpoint_note(step):
    return "no checkpoint yet" if step is None else "last good checkpoint: step {}".format(step)


def _last_checkpoint(workdir):
    state = run_dir.read_state(workdir)
    return _checkpoint_note(state["step"] if state else None)


def run(args):
    """CLI entry: exit 0 when done, 1 when the loss diverged or a peer worker was lost, 2 on bad
    input (UserError)."""
    from training.data import dataset as data_io

    cfg = config_with_overrides(training_config.load_config(args.config), args.data, args.steps,
                                args.skip_bad, resume=args.resume)
    workdir = args.workdir or os.path.join(
        "runs", os.path.splitext(os.path.basename(args.config))[0])
    # config_with_overrides checked the distribute section.
    strategy = distribute.choose_strategy(cfg.distribute, cfg.train, _start_step(workdir, args.resume))
    examples = data_io.load_split(cfg.data, "train", cfg.model.labels)
    eval_examples = data_io.load_split(cfg.data, "eval", cfg.model.labels)
    if cfg.eval.max_images:
        eval_examples = eval_examples[:cfg.eval.max_images]
    cache = cfg.data.cache and pipeline.fits_in_cache(examples)
    try:
        train(cfg, workdir, data_io.decoded_dataset(examples), cache=cache,
              eval_examples=eval_examples, resume=args.resume, strategy=strategy)
    except TrainingDiverged as e:
        print("edgedet-train: error: {} ({} in {}). Lower train.learning_rate_base or check the "
              "data.".format(e, _last_checkpoint(workdir), workdir), file=sys.stderr)
        return 1
    except distribute.PEER_ERRORS as e:
        if not distribute.is_multi_worker(strategy):
            raise
        print("edgedet-train: error: lost a peer worker: {} ({} in {}). Restart every worker with "
              "--resume.".format(distribute.peer_error_line(e), _last_checkpoint(workdir), workdir),
              file=sys.stderr)
        return 1
    print("edgedet-train: done; run in {}".format(workdir))
    return 0
