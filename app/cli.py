"""`edgedet [run] ...` runs live detection; `edgedet devices` lists Edge TPUs and runtimes.

Settings come from the `app:` and `postprocess:` sections of --config (defaults without
one); every flag given on the command line overrides its key. Detection thresholds not
set by either come from the bundle's model.json.
"""

import argparse
import logging
import os
import signal
import sys

from app import config, devices, live_model, overlay, runtime, sinks
from app.errors import UserError, run_cli
from app.labels import class_thresholds_by_id, read_labels
from app.pipeline import Pipeline, Worker
from app.redact import redact
from app.sources import open_source
from app.stats import Stats

log = logging.getLogger("edgedet")
THRESHOLD_KEYS = ("score_threshold", "iou_threshold", "max_detections", "max_detections_per_class")


def _add_run_arguments(p):
    p.add_argument("--config", help="config.yaml with app: and postprocess: sections")
    p.add_argument("--model", help="bundle directory (models/demo) or a foreign .tflite file")
    p.add_argument("--source", action="append", help="camera index, /dev/videoN, rtsp/http URL, video, "
                   "folder, glob or synthetic[:WxH[@FPS]]; repeat for several")
    p.add_argument("--labels", help="label file (Coral 'id name' or one name per line)")
    p.add_argument("--runtime", choices=("auto", "edgetpu", "cpu"))
    p.add_argument("--precision", choices=("auto", "int8", "float"))
    p.add_argument("--device", action="append", help="Edge TPU: usb, usb:N, pci, pci:N or :N; repeatable")
    p.add_argument("--threads", type=int, help="CPU interpreter threads (0 = all cores)")
    p.add_argument("--loop", action="store_true", default=None, help="restart video files and folders")
    p.add_argument("--realtime", action="store_true", default=None, help="pace files like a live source")
    p.add_argument("--max-frames", type=int, help="stop after N processed frames")
    p.add_argument("--headless", action="store_true", default=None, help="never open a preview window")
    p.add_argument("--events", help="JSON-lines events to FILE, or - for stdout")
    p.add_argument("--stats", help="stats JSON file, rewritten every second")
    p.add_argument("--score-threshold", type=float)
    p.add_argument("--iou-threshold", type=float)
    p.add_argument("--max-detections", type=int)
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))


def build_parser():
    parser = argparse.ArgumentParser(prog="edgedet", description="Live SSD detection on a Coral Edge TPU or the CPU.")
    sub = parser.add_subparsers(dest="command")
    _add_run_arguments(sub.add_parser("run", help="run live detection (the default command)"))
    sub.add_parser("devices", help="list Edge TPUs and TFLite runtimes")
    return parser


def resolve_settings(args):
    """(AppConfig, thresholds overrides dict) from --config plus the flags given."""
    cfg = config.load_device_config(args.config)
    app_cfg = config.replace(
        cfg.app, model=args.model, labels=args.labels, sources=args.source, runtime=args.runtime,
        precision=args.precision, devices=args.device, num_threads=args.threads, loop=args.loop,
        realtime=args.realtime, max_frames=args.max_frames, headless=args.headless, events=args.events,
        stats=args.stats, log_level=args.log_level)
    for device in app_cfg.devices:
        runtime.check_device(device)
    # Only keys the user actually set override model.json's postprocess defaults.
    set_in_yaml = (config.read_yaml(args.config).get("postprocess") or {}) if args.config else {}
    overrides = {k: getattr(cfg.postprocess, k) for k in THRESHOLD_KEYS if k in set_in_yaml}
    for key, value in (("score_threshold", args.score_threshold), ("iou_threshold", args.iou_threshold),
                       ("max_detections", args.max_detections)):
        if value is not None:
            overrides[key] = value
    overrides["class_score_thresholds"] = cfg.postprocess.class_score_thresholds or {}
    return app_cfg, overrides


def _thresholds(defaults, overrides, labels):
    values = dict(defaults)
    values.update(overrides)
    if not 0.0 <= values["score_threshold"] <= 1.0 or not 0.0 <= values["iou_threshold"] <= 1.0:
        raise UserError("score_threshold and iou_threshold must be within 0..1, got {} and {}"
                        .format(values["score_threshold"], values["iou_threshold"]))
    if values["max_detections"] < 1:
        raise UserError("max_detections must be >= 1, got {}".format(values["max_detections"]))
    values["class_score_thresholds"] = class_thresholds_by_id(values["class_score_thresholds"], labels)
    return values


def _bundle_workers(app_cfg, overrides):
    from app.bundle import load_bundle
    bundle = load_bundle(app_cfg.model)
    labels = list(bundle.labels)
    if app_cfg.labels:
        given = read_labels(app_cfg.labels)
        if given != dict(enumerate(labels)):
            raise UserError("--labels {}: {} labels {} do not match the bundle's {} {}. Drop --labels for a "
                            "bundle, or pass its labels.txt".format(app_cfg.labels, len(given),
                                                                   list(given.values())[:6], len(labels), labels))
    thresholds = _thresholds(bundle.postprocess, overrides, labels)
    workers = []
    for device in app_cfg.devices or [""]:
        engine, key = runtime.open_bundle_engine(bundle, app_cfg.runtime, app_cfg.precision, device,
                                                 app_cfg.num_threads)
        reader = live_model.OutputReader(engine.interpreter, bundle.models[key].outputs, engine.model_path)
        live_model.check_labels(reader, labels, engine.model_path)
        writer = live_model.InputWriter(engine.interpreter, bundle.float_range)
        workers.append((engine, Worker(engine.interpreter, writer, reader,
                                       live_model.BundleDecoder(reader, bundle, thresholds), key)))
        if engine.kind == "cpu":
            break  # one CPU interpreter already uses every thread it was given
    return workers, dict(enumerate(labels))


def _foreign_workers(app_cfg, overrides):
    if not app_cfg.labels:
        raise UserError("--model {}: a foreign .tflite needs --labels (Coral 'id name' or one name per line)"
                        .format(app_cfg.model))
    labels = read_labels(app_cfg.labels)
    defaults = {"score_threshold": 0.4, "iou_threshold": 0.6, "max_detections": 15}
    thresholds = _thresholds(defaults, overrides, labels)
    workers = []
    for device in app_cfg.devices or [""]:
        engine = runtime.open_engine(app_cfg.model, app_cfg.runtime, device, app_cfg.num_threads)
        reader = live_model.ForeignReader(engine.interpreter, engine.model_path)
        writer = live_model.InputWriter(engine.interpreter)
        name = os.path.basename(engine.model_path)
        workers.append((engine, Worker(engine.interpreter, writer, reader,
                                       live_model.ForeignDecoder(reader, thresholds), name)))
        if engine.kind == "cpu":
            break
    return workers, labels


def open_workers(app_cfg, overrides):
    """Opens the model on every device: ([(Engine, Worker)], labels {class_id: name})."""
    if app_cfg.model.endswith(".tflite"):
        return _foreign_workers(app_cfg, overrides)
    return _bundle_workers(app_cfg, overrides)


def _sinks(app_cfg, stats, stop):
    result = []
    if app_cfg.events:
        result.append(sinks.EventWriter(app_cfg.events))
    if app_cfg.stats:
        result.append(sinks.StatsWriter(app_cfg.stats, stats))
    if not app_cfg.headless and overlay.display_available():
        result.append(overlay.PreviewWindow(stop))
    elif not app_cfg.headless:
        log.info("no DISPLAY: running headless")
    return result


def _log_start(engines, sources):
    log.info("%s", runtime.describe(engines[0]))
    tpus = devices.list_edgetpus()
    log.info("Edge TPUs found: %s", ", ".join("{} {}".format(t["type"], t["path"]) for t in tpus) or "none")
    log.info("sources: %s", ", ".join(redact(s.name) for s in sources))


def run(args):
    """`edgedet run`: returns the exit code."""
    app_cfg, overrides = resolve_settings(args)
    logging.basicConfig(level=app_cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if app_cfg.max_frames < 0:
        raise UserError("--max-frames must be >= 0 (0 = run forever), got {}".format(app_cfg.max_frames))
    # Sources first: a camera that is not there is the cheaper mistake to report.
    sources = [open_source(s, app_cfg.loop, app_cfg.realtime, seed=i) for i, s in enumerate(app_cfg.sources)]
    pairs, labels = open_workers(app_cfg, overrides)
    engines = [e for e, _ in pairs]
    where = "Edge TPU" if engines[0].kind == "edgetpu" else "CPU"
    stats = Stats("{} {} {}".format(engines[0].runtime.name, engines[0].runtime.version, where),
                  pairs[0][1].model, engines[0].num_threads)
    _log_start(engines, sources)
    holder = []
    sink_list = _sinks(app_cfg, stats, lambda: holder[0].stop())
    pipeline = Pipeline(sources, [w for _, w in pairs], labels, sink_list, stats, app_cfg.max_frames,
                        hud=overlay.hud_text, draw=overlay.draw_result)
    holder.append(pipeline)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: pipeline.stop())
    frames = pipeline.run()
    log.info("stopped after %d frames", frames)
    return 0


def main(argv):
    if not argv or argv[0] not in ("run", "devices", "-h", "--help"):
        argv = ["run"] + list(argv)
    args = build_parser().parse_args(argv)
    if args.command == "devices":
        print("\n".join(devices.report()))
        return 0
    return run(args)


def entry():
    """Console script `edgedet`."""
    sys.exit(run_cli(main))
