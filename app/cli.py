"""`edgedet [run] ...` runs live detection; `edgedet devices` lists Edge TPUs and runtimes.

Settings come from the `app:`, `postprocess:`, `reference:` and `http:` sections of --config
(defaults without one); every flag given on the command line overrides its key. Detection
thresholds not set by either come from the bundle's model.json.

Start-up order: sources, model (one interpreter per Edge TPU), warm-up inference, the
float-reference check on the bundle's samples (it may fall back to the float model at
once), web view, then READY=1 to systemd and the threads.

Exit codes: 0 stopped (SIGTERM/SIGINT, q, end of files, --max-frames); 2 bad input;
3 the live model disagreed with the float model and reference.on_mismatch is exit;
4 an invoke hung and the interpreter could not be rebuilt.
"""

import argparse
import logging
import signal
import sys

from app import config, devices, overlay, runtime, service, sinks, webview, workers
from app.errors import UserError, run_cli
from app.pipeline import Pipeline
from app.redact import redact, redact_logging
from app.sources import open_source
from app.stats import Stats

log = logging.getLogger("edgedet")
THRESHOLD_KEYS = ("score_threshold", "iou_threshold", "max_detections", "max_detections_per_class",
                  "class_agnostic_nms")


def _add_run_arguments(p):
    p.add_argument("--config", help="config.yaml with app: and postprocess: sections")
    p.add_argument("--model", help="bundle directory (models/demo) or a foreign .tflite file")
    p.add_argument("--source", action="append", help="camera index, /dev/videoN, rtsp/http URL, video, "
                   "folder, glob or synthetic[:WxH[@FPS]]; repeat for several")
    p.add_argument("--labels", help="label file (OD API label_map.pbtxt, Coral 'id name' or one name per line)")
    p.add_argument("--runtime", choices=("auto", "edgetpu", "cpu"))
    p.add_argument("--precision", choices=("auto", "int8", "float"))
    p.add_argument("--device", action="append", help="Edge TPU: usb, usb:N, pci, pci:N or :N; repeatable")
    p.add_argument("--threads", type=int, help="CPU interpreter threads (0 = auto: all cores but one)")
    p.add_argument("--loop", action="store_true", default=None, help="restart video files and folders")
    p.add_argument("--realtime", action="store_true", default=None, help="pace files like a live source")
    p.add_argument("--max-frames", type=int, help="stop after N processed frames")
    p.add_argument("--headless", action="store_true", default=None, help="never open a preview window")
    p.add_argument("--events", help="JSON-lines events to FILE, or - for stdout")
    p.add_argument("--stats", help="stats JSON file, rewritten every second")
    p.add_argument("--score-threshold", type=float)
    p.add_argument("--iou-threshold", type=float)
    p.add_argument("--max-detections", type=int)
    p.add_argument("--class-agnostic-nms", dest="class_agnostic_nms", action="store_true", default=None,
                   help="NMS across classes too: one label per object")
    p.add_argument("--per-class-nms", dest="class_agnostic_nms", action="store_false",
                   help="NMS within each class only (the OD API default)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    p.add_argument("--reference", dest="reference", action="store_true", default=None,
                   help="check the live model against the bundle's float model (the default)")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="no float-reference check")
    p.add_argument("--on-mismatch", choices=("warn", "fallback", "exit"),
                   help="what a low float-reference agreement does (exit code 3 for exit)")
    p.add_argument("--http", metavar="HOST:PORT", help="serve the web view (a bare port means 127.0.0.1)")
    p.add_argument("--http-credentials", metavar="FILE", help="file holding the web view password/token")
    p.add_argument("--http-insecure", action="store_true", default=None,
                   help="allow a non-loopback --http without credentials")


def build_parser():
    parser = argparse.ArgumentParser(prog="edgedet", description="Live SSD detection on a Coral Edge TPU or the CPU.")
    sub = parser.add_subparsers(dest="command")
    _add_run_arguments(sub.add_parser("run", help="run live detection (the default command)"))
    sub.add_parser("devices", help="list Edge TPUs and TFLite runtimes")
    return parser


def resolve_settings(args):
    """(DeviceConfig with the flags applied, thresholds overrides dict) from --config plus the flags."""
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
                       ("max_detections", args.max_detections),
                       ("class_agnostic_nms", args.class_agnostic_nms)):
        if value is not None:
            overrides[key] = value
    overrides["class_score_thresholds"] = cfg.postprocess.class_score_thresholds or {}
    ref_cfg = config.replace(cfg.reference, enabled=args.reference, on_mismatch=args.on_mismatch)
    http_cfg = config.replace(cfg.http, listen=args.http, credentials_file=args.http_credentials,
                              insecure=args.http_insecure)
    return config.DeviceConfig(app_cfg, cfg.postprocess, ref_cfg, http_cfg), overrides


def open_sources(app_cfg):
    """Opens every --source; a name used twice gets "#2", "#3"... so stats and events stay apart."""
    sources, seen = [], {}
    for i, spec in enumerate(app_cfg.sources):
        source = open_source(spec, app_cfg.loop, app_cfg.realtime, seed=i, timeout_s=app_cfg.source_timeout_s)
        seen[source.name] = seen.get(source.name, 0) + 1
        if seen[source.name] > 1:
            source.name = "{}#{}".format(source.name, seen[source.name])
        sources.append(source)
    return sources


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


def _web_view(http_cfg, feed, stats):
    """The started WebView for http.listen, or None when it is off."""
    if not http_cfg.listen:
        return None
    host, port = webview.parse_listen(http_cfg.listen)
    secret = webview.read_credentials(http_cfg.credentials_file) if http_cfg.credentials_file else None
    view = webview.WebView(host, port, feed.get_jpeg, stats.snapshot, stats.last_frame_time,
                           credentials=secret, insecure=http_cfg.insecure)
    return view.start()


def _log_start(engines, sources):
    log.info("%s", runtime.describe(engines[0]))
    tpus = devices.list_edgetpus()
    log.info("Edge TPUs found: %s", ", ".join("{} {}".format(t["type"], t["path"]) for t in tpus) or "none")
    log.info("sources: %s", ", ".join(redact(s.name) for s in sources))


def _reference_guard(cfg, live, stats):
    """A ReferenceGuard when the check applies (bundle, enabled, live model not float), else None."""
    engine, worker = live.pairs[0]
    if not cfg.reference.enabled or live.bundle is None or worker.model == "float":
        return None
    return service.ReferenceGuard(live.bundle, live.thresholds, engine, worker.model, cfg.reference,
                                  cfg.app.num_threads, stats)


def run(args):
    """`edgedet run`: returns the exit code."""
    cfg, overrides = resolve_settings(args)
    app_cfg = cfg.app
    logging.basicConfig(level=app_cfg.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logging()
    if app_cfg.max_frames < 0:
        raise UserError("--max-frames must be >= 0 (0 = run forever), got {}".format(app_cfg.max_frames))
    # Sources first: a camera that is not there is the cheaper mistake to report.
    sources = open_sources(app_cfg)
    live = workers.LiveModel(app_cfg, overrides)
    engines = [e for e, _ in live.pairs]
    where = "Edge TPU" if engines[0].kind == "edgetpu" else "CPU"
    stats = Stats("{} {} {}".format(engines[0].runtime.name, engines[0].runtime.version, where),
                  live.pairs[0][1].model, engines[0].num_threads)
    _log_start(engines, sources)
    for _, worker in live.pairs:
        workers.warm_up(worker)
    holder = []
    sink_list = _sinks(app_cfg, stats, lambda: holder[0].stop())
    feed = service.FrameFeed(overlay.draw_result, lambda: overlay.hud_text(stats)) if cfg.http.listen else None
    guard = _reference_guard(cfg, live, stats)
    notifier = service.SystemdNotifier(stats)
    sink_list += [s for s in (feed, guard) if s is not None] + [notifier]  # the notifier LAST
    pipeline = Pipeline(sources, [w for _, w in live.pairs], live.labels, sink_list, stats, app_cfg.max_frames,
                        hud=overlay.hud_text, draw=overlay.draw_result, source_timeout_s=app_cfg.source_timeout_s,
                        invoke_timeout_s=app_cfg.invoke_timeout_s, rebuild=live.rebuild)
    holder.append(pipeline)
    if guard is not None:
        guard.attach(pipeline)
        guard.run_startup(live.pairs[0][1])
        if guard.exit_requested:
            pipeline.join()
            return service.EXIT_REFERENCE_MISMATCH
    view = _web_view(cfg.http, feed, stats) if feed is not None else None
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: pipeline.stop())
    notifier.ready("started: model {} | {} | {} source(s)".format(stats.model, stats.runtime, len(sources)))
    try:
        pipeline.start()
        if guard is not None:
            guard.start()
        pipeline.wait()
    finally:
        notifier.stopping()
        if guard is not None:
            guard.join(0.5)
        pipeline.join()
        if view is not None:
            view.stop(0.5)
    log.info("stopped after %d frames", pipeline.processed)
    return pipeline.exit_code or (service.EXIT_REFERENCE_MISMATCH if guard and guard.exit_requested else 0)

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
