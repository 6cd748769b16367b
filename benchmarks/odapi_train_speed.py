"""Float training speed of edgedet against the OD API's model_main_tf2, in one run on this machine.

    .venv/bin/python benchmarks/odapi_train_speed.py [--rounds 2] [--steps 400] [--data DIR]

Both trainers run as their own command line on the same synthetic TFRecords
(`edgedet-train synth`, or --data) with the same config (config.yaml's model and train
sections, float only; the OD API gets them as a pipeline.config; edgedet on the CPU
replicas the config's whole run would get), one after the other:
OD API, edgedet, OD API, edgedet, ... Each run is timed from its step-100 progress line
(tracing and warm-up done) to its last one: wall seconds per step and CPU seconds per
step (user + system of the process, from /proc). On a host shared with other jobs the
wall figure moves with their load; the CPU figure much less.

The OD API lives in a venv outside the project (default /work/odapi-venv, or
$ODAPI_VENV; `benchmarks/odapi_venv.py` makes one). Without it the script says so and
exits 0.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from app.errors import run_cli  # noqa: E402
from training import config as training_config  # noqa: E402
from training import cpu_replicas  # noqa: E402

replace = training_config.app_config.replace
DEFAULT_VENV = os.environ.get("ODAPI_VENV", "/work/odapi-venv")
LOG_EVERY = 100
# Progress lines: the OD API logs every 100 steps, edgedet every train.log_every steps.
ODAPI_LINE = re.compile(r"Step (\d+) per-step time")
EDGEDET_LINE = re.compile(r"^step (\d+)/\d+ ")

PIPELINE = """model {{ ssd {{
  num_classes: {num_classes}
  image_resizer {{ fixed_shape_resizer {{ height: {m.input_height} width: {m.input_width} }} }}
  feature_extractor {{
    type: "{m.feature_extractor}" depth_multiplier: {m.depth_multiplier} min_depth: {m.min_depth}
    conv_hyperparams {{
      regularizer {{ l2_regularizer {{ weight: {m.l2_weight} }} }}
      initializer {{ truncated_normal_initializer {{ mean: 0.0 stddev: 0.03 }} }}
      activation: RELU_6
      batch_norm {{ decay: {m.batch_norm_decay} center: true scale: true epsilon: {m.batch_norm_epsilon} train: true }}
    }}
    override_base_feature_extractor_hyperparams: true
  }}
  box_coder {{ faster_rcnn_box_coder {{ y_scale: {b.y_scale} x_scale: {b.x_scale} height_scale: {b.height_scale} width_scale: {b.width_scale} }} }}
  matcher {{ argmax_matcher {{ matched_threshold: {t.matched_threshold} unmatched_threshold: {t.unmatched_threshold}
    negatives_lower_than_unmatched: true force_match_for_each_row: {force} use_matmul_gather: true }} }}
  similarity_calculator {{ iou_similarity {{ }} }}
  box_predictor {{ convolutional_box_predictor {{
    conv_hyperparams {{
      regularizer {{ l2_regularizer {{ weight: {m.l2_weight} }} }}
      initializer {{ random_normal_initializer {{ mean: 0.0 stddev: 0.01 }} }}
      activation: RELU_6
      batch_norm {{ decay: {m.batch_norm_decay} center: true scale: true epsilon: {m.batch_norm_epsilon} train: true }}
    }}
    kernel_size: {m.box_predictor_kernel_size} box_code_size: 4 class_prediction_bias_init: {m.class_prediction_bias_init}
  }} }}
  anchor_generator {{ ssd_anchor_generator {{
    num_layers: {a.num_layers} min_scale: {a.min_scale} max_scale: {a.max_scale}
    {aspect_ratios}
    interpolated_scale_aspect_ratio: {a.interpolated_scale_aspect_ratio}
    reduce_boxes_in_lowest_layer: {reduce}
  }} }}
  post_processing {{
    batch_non_max_suppression {{ score_threshold: 1e-08 iou_threshold: 0.6 max_detections_per_class: 10 max_total_detections: 20 }}
    score_converter: SIGMOID
  }}
  normalize_loss_by_num_matches: true
  loss {{
    localization_loss {{ weighted_smooth_l1 {{ delta: {t.smooth_l1_delta} }} }}
    classification_loss {{ weighted_sigmoid_focal {{ gamma: {t.focal_gamma} alpha: {t.focal_alpha} }} }}
    classification_weight: {t.classification_weight} localization_weight: {t.localization_weight}
  }}
  encode_background_as_zeros: true
  normalize_loc_loss_by_codesize: true
}} }}
train_config {{
  batch_size: {t.batch_size}
  {augmentations}
  optimizer {{ momentum_optimizer {{
    learning_rate {{ cosine_decay_learning_rate {{ learning_rate_base: {t.learning_rate_base} total_steps: {t.steps}
      warmup_learning_rate: {t.warmup_learning_rate} warmup_steps: {t.warmup_steps} }} }}
    momentum_optimizer_value: {t.momentum}
  }} use_moving_average: false }}
  num_steps: {t.steps}
  max_number_of_boxes: {max_boxes}
}}
train_input_reader {{
  shuffle_buffer_size: {shuffle}
  label_map_path: "{data}/label_map.pbtxt"
  tf_record_input_reader {{ input_path: "{data}/train.tfrecord" }}
}}
"""

CROP = ("data_augmentation_options {{ random_crop_image {{ min_object_covered: {c.min_object_covered} "
        "min_aspect_ratio: {c.min_aspect_ratio} max_aspect_ratio: {c.max_aspect_ratio} min_area: {c.min_area} "
        "max_area: {c.max_area} overlap_thresh: {c.overlap_thresh} clip_boxes: {clip} random_coef: {c.random_coef} }} }}")
# The augmentations written into the pipeline; a config that enables another one is refused.
RENDERED = ("random_horizontal_flip", "random_crop_image")


def _proto_bool(value):
    return "true" if value else "false"


def _dotted(section, key):
    for part in key.split("."):
        section = getattr(section, part)
    return section


def _augmentations(train_cfg):
    """The train section's flip and random_crop as data_augmentation_options."""
    others = [name for name, key in training_config.AUGMENTATIONS
              if name not in RENDERED and _dotted(train_cfg, key)]
    if others:
        raise SystemExit("odapi_train_speed: only {} are written into the OD API pipeline; the config also "
                         "sets {}".format(", ".join(RENDERED), ", ".join(others)))
    options = ["data_augmentation_options { random_horizontal_flip { } }"] if train_cfg.horizontal_flip else []
    if train_cfg.random_crop.enabled:
        options.append(CROP.format(c=train_cfg.random_crop, clip=_proto_bool(train_cfg.random_crop.clip_boxes)))
    return "\n  ".join(options)


def pipeline_config(cfg, data_dir):
    """The OD API pipeline.config of `cfg`'s model and train sections, reading `data_dir`'s TFRecords."""
    m, t = cfg.model, cfg.train
    return PIPELINE.format(
        m=m, a=m.anchors, b=m.box_coder, t=t, num_classes=len(m.labels), data=os.path.abspath(data_dir),
        force=_proto_bool(t.force_match_for_each_row), reduce=_proto_bool(m.anchors.reduce_boxes_in_lowest_layer),
        aspect_ratios=" ".join("aspect_ratios: {}".format(r) for r in m.anchors.aspect_ratios),
        augmentations=_augmentations(t), max_boxes=cfg.data.max_boxes,
        shuffle=cfg.data.shuffle_buffer)


def float_config(cfg, steps):
    """`cfg` trained float only for `steps` steps, logged every LOG_EVERY, one checkpoint, a small
    eval, on the CPU replicas `cfg`'s whole run gets (distribute.cpu_replicas auto counts its float steps)."""
    train = replace(cfg.train, steps=steps, log_every=LOG_EVERY, checkpoint_every=steps, eval_every=0,
                    quantization=replace(cfg.train.quantization, enabled=False))
    replicas = cpu_replicas.run_replicas(cfg.distribute.cpu_replicas, cfg.train)
    return replace(cfg, train=train, eval=replace(cfg.eval, max_images=8),
                   distribute=replace(cfg.distribute, cpu_replicas=str(replicas)))


def _cpu_seconds(pid):
    """User + system CPU seconds of process `pid` (all its threads), from /proc/<pid>/stat."""
    with open("/proc/{}/stat".format(pid)) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sampled_run(cmd, env, line, log_path):
    """Runs `cmd`; at each output line matching `line` records (step, wall s, CPU s).

    The whole output goes to `log_path`. Raises SystemExit naming the log if the run fails.
    """
    samples = []
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                universal_newlines=True)
        for text in proc.stdout:
            log.write(text)
            found = line.search(text)
            if found and not (samples and samples[-1][0] == int(found.group(1))):  # logged twice
                samples.append((int(found.group(1)), time.perf_counter(), _cpu_seconds(proc.pid)))
        if proc.wait() != 0:
            raise SystemExit("odapi_train_speed: {} failed (exit {}); see {}".format(
                " ".join(cmd[:4]), proc.returncode, log_path))
    return samples


def per_step(samples):
    """(wall s/step, CPU s/step) from the first progress line (step LOG_EVERY) to the last."""
    timed = [s for s in samples if s[0] >= LOG_EVERY]
    if len(timed) < 2:
        raise SystemExit("odapi_train_speed: too few steps to time; use --steps {} or more".format(2 * LOG_EVERY))
    first, last = timed[0], timed[-1]
    steps = float(last[0] - first[0])
    return (last[1] - first[1]) / steps, (last[2] - first[2]) / steps


def odapi_run(venv, pipeline_path, steps, workdir, log_path):
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [os.path.join(venv, "bin", "python"), "-m", "object_detection.model_main_tf2",
           "--pipeline_config_path=" + pipeline_path, "--model_dir=" + tempfile.mkdtemp(dir=workdir),
           "--num_train_steps={}".format(steps), "--checkpoint_every_n={}".format(steps), "--alsologtostderr"]
    return per_step(sampled_run(cmd, env, ODAPI_LINE, log_path))


def edgedet_run(config_path, data_dir, workdir, log_path):
    cmd = [sys.executable, "-m", "training", "train", "--config", config_path, "--data", data_dir,
           "--workdir", tempfile.mkdtemp(dir=workdir)]
    return per_step(sampled_run(cmd, dict(os.environ, PYTHONPATH=ROOT), EDGEDET_LINE, log_path))


def _spread(values):
    return "median {:.3f}  range {:.3f}..{:.3f}".format(statistics.median(values), min(values), max(values))


def report(rows, loads):
    """Prints each round (with the host's 1-minute load average after each of its runs) and the
    median and range of every column."""
    print("round  OD API s/step (CPU s/step)  edgedet s/step (CPU s/step)  speed-up wall (CPU)  load")
    for i, ((od, ed), load) in enumerate(zip(rows, loads)):
        print("{:5d}  {:6.3f} ({:6.3f})             {:6.3f} ({:6.3f})              {:.2f}x ({:.2f}x)"
              "        {:.1f}, {:.1f}".format(i + 1, od[0], od[1], ed[0], ed[1], od[0] / ed[0], od[1] / ed[1], *load))
    for name, values in (("OD API wall", [r[0][0] for r in rows]), ("OD API CPU", [r[0][1] for r in rows]),
                         ("edgedet wall", [r[1][0] for r in rows]), ("edgedet CPU", [r[1][1] for r in rows]),
                         ("speed-up wall", [r[0][0] / r[1][0] for r in rows]),
                         ("speed-up CPU", [r[0][1] / r[1][1] for r in rows])):
        print("{:14s} {}".format(name, _spread(values)))


def write_configs(cfg, data_dir, workdir):
    """(pipeline.config, config.yaml) of `cfg` written into `workdir`, for the OD API and edgedet."""
    paths = os.path.join(workdir, "pipeline.config"), os.path.join(workdir, "config.yaml")
    for path, text in zip(paths, (pipeline_config(cfg, data_dir), training_config.render_config(cfg))):
        with open(path, "w") as f:
            f.write(text)
    return paths


def _synth(workdir, train_images):
    data = os.path.join(workdir, "synth")
    subprocess.check_call([sys.executable, "-m", "training", "synth", "--out", data, "--train",
                           str(train_images), "--eval", "20"], env=dict(os.environ, PYTHONPATH=ROOT))
    return data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=os.path.join(ROOT, "config.yaml"), help="edgedet config (model, train)")
    parser.add_argument("--data", help="a synth set (default: 800 train images written into --workdir)")
    parser.add_argument("--steps", type=int, default=400, help="steps per run; timed from step 100")
    parser.add_argument("--rounds", type=int, default=2, help="OD API + edgedet pairs, interleaved")
    parser.add_argument("--venv", default=DEFAULT_VENV, help="the OD API venv")
    parser.add_argument("--workdir", help="runs and logs (default: a new temporary folder)")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.venv, "bin", "python")):
        print("odapi_train_speed: skipped: no OD API venv at {} (make one with benchmarks/odapi_venv.py)"
              .format(args.venv))
        return 0
    cfg = float_config(training_config.load_config(args.config), args.steps)
    workdir = args.workdir or tempfile.mkdtemp(prefix="odapi_train_speed_")
    os.makedirs(workdir, exist_ok=True)
    data = args.data or _synth(workdir, 800)
    pipeline_path, config_path = write_configs(cfg, data, workdir)
    print("{}x{}, depth {}, batch {}, {} steps per run, edgedet on {} CPU replica(s); runs and logs in {}".format(
        cfg.model.input_height, cfg.model.input_width, cfg.model.depth_multiplier, cfg.train.batch_size,
        args.steps, cfg.distribute.cpu_replicas, workdir), flush=True)
    rows, loads = [], []
    for i in range(1, args.rounds + 1):
        log = os.path.join(workdir, "{}_%d.log" % i)
        odapi = odapi_run(args.venv, pipeline_path, args.steps, workdir, log.format("odapi"))
        odapi_load = os.getloadavg()[0]
        rows.append((odapi, edgedet_run(config_path, data, workdir, log.format("edgedet"))))
        loads.append((odapi_load, os.getloadavg()[0]))
        print("OD API {:.3f} s/step, edgedet {:.3f} s/step".format(rows[-1][0][0], rows[-1][1][0]), flush=True)
    report(rows, loads)
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main, prog="odapi_train_speed"))
