"""`edgedet-train compare --config A.yaml --config B.yaml ... --data D --workdir W [--steps N]`

Trains every config on the same data with the same schedule, exports each through the same
fidelity gate (quantization-aware, and post-training int8 of its float checkpoint), measures
size, Edge TPU preflight and CPU latency, and writes W/compare.json and W/compare.html.
A model already finished in W (W/<name>/result.json) is not trained again.
"""

import datetime
import os
import platform

from app import arguments
from app.errors import UserError
from training import bundle_writer
from training.compare import measure, model_run, page, settings

JSON_FILE, HTML_FILE = "compare.json", "compare.html"


def add_arguments(parser):
    parser.add_argument("--config", action="append", required=True, type=arguments.input_file,
                        help="a config.yaml to compare (pass it once per model, at least twice)")
    parser.add_argument("--data", required=True, type=arguments.input_dir,
                        help="folder laid out as `edgedet-train synth` writes it; every model trains on it")
    parser.add_argument("--workdir", required=True, type=arguments.output_dir,
                        help="folder for the runs, bundles, compare.json and compare.html")
    parser.add_argument("--steps", type=arguments.integer(2, 10 ** 9),
                        help="train every model this many steps (rescales each schedule)")


def host_cpu():
    """'<CPU model>, <n> cores' of this host (Linux /proc/cpuinfo, else platform.processor())."""
    names = []
    if os.path.isfile("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return "{}, {} cores".format(names[0] if names else platform.processor() or platform.machine(),
                                 os.cpu_count())


def _load_data(cfg):
    from training.data import dataset as data_io
    from training.export import MIN_CALIBRATION_IMAGES
    train_examples = data_io.load_split(cfg.data, "train", cfg.model.labels)
    eval_examples = data_io.load_split(cfg.data, "eval", cfg.model.labels)
    if len(eval_examples) < MIN_CALIBRATION_IMAGES:
        raise UserError("--data {}: the eval split has {} images; the export calibrates and gates on >= {}"
                        .format(os.path.dirname(cfg.data.eval), len(eval_examples), MIN_CALIBRATION_IMAGES))
    return train_examples, eval_examples


def comparison(models, rows, data_dir, eval_images):
    """The compare.json dict: the shared settings and one row per model, in --config order."""
    first = models[0].cfg.train
    return {"created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "data": os.path.abspath(data_dir), "eval_images": eval_images, "steps": first.steps,
            "quantization_delay": first.quantization.delay, "host": host_cpu(),
            "latency_invokes": measure.LATENCY_INVOKES, "models": rows}


def write_outputs(workdir, result):
    """compare.json and compare.html in `workdir`, each atomically."""
    bundle_writer.write_json_atomic(os.path.join(workdir, JSON_FILE), result)
    bundle_writer.write_text_atomic(os.path.join(workdir, HTML_FILE), page.render_html(result))


def run(args):
    models = settings.load_models(args.config, args.data, args.steps)
    train_examples, eval_examples = _load_data(models[0].cfg)
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    for i, model in enumerate(models):
        folder = os.path.join(args.workdir, model.name)
        row = model_run.read_result(folder)
        print("compare [{}/{}] {}: {}".format(i + 1, len(models), model.name,
                                              "done before, kept" if row else "training and exporting"), flush=True)
        rows.append(row or model_run.compare_one(model, folder, train_examples, eval_examples))
    result = comparison(models, rows, args.data, len(eval_examples))
    write_outputs(args.workdir, result)
    print("compare: wrote {} and {}".format(os.path.join(args.workdir, JSON_FILE),
                                           os.path.join(args.workdir, HTML_FILE)))
    return 0
