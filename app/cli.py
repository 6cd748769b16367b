"""`edgedet [run] ...` runs live detection; `edgedet devices` lists Edge TPUs and runtimes.

Settings come from the `app:`, `postprocess:`, `reference:`, `http:`, `objects:`, `mqtt:`,
`snapshots:` and `clips:` sections of --config (defaults without one); every flag given on the command line overrides its
key. Detection thresholds not set by either come from the bundle's model.json.

What runs, in start-up order, is `app.live_app.LiveApp`.

Exit codes: 0 stopped (SIGTERM/SIGINT, q, end of files, --max-frames); 2 bad input;
3 the live model disagreed with the float model and reference.on_mismatch is exit;
4 an invoke hung and the interpreter could not be rebuilt.
"""

import logging
import signal
import sys

from app import arguments, config
from app.inference import devices, runtime
from app.errors import run_cli
from app.live_app import LiveApp
from app.redact import redact_logging

THRESHOLD_KEYS = ("score_threshold", "iou_threshold", "max_detections", "max_detections_per_class",
                  "class_agnostic_nms")


def _add_run_arguments(p):
    p.add_argument("--config", type=arguments.input_file, help="config.yaml with app: and postprocess: sections")
    p.add_argument("--model", type=arguments.input_path,
                   help="bundle directory (models/demo) or a foreign .tflite file")
    p.add_argument("--source", action="append", help="camera index, /dev/videoN, rtsp/http URL, video, "
                   "folder, glob or synthetic[:WxH[@FPS]]; repeat for several")
    p.add_argument("--labels", type=arguments.input_file,
                   help="label file (OD API label_map.pbtxt, Coral 'id name' or one name per line)")
    p.add_argument("--runtime", choices=("auto", "edgetpu", "cpu"))
    p.add_argument("--precision", choices=("auto", "int8", "float"))
    p.add_argument("--device", action="append", help="Edge TPU: usb, usb:N, pci, pci:N or :N; repeatable")
    p.add_argument("--threads", type=arguments.integer(0, 1024),
                   help="CPU interpreter threads (0 = auto: all cores but one)")
    p.add_argument("--loop", action="store_true", default=None, help="restart video files and folders")
    p.add_argument("--realtime", action="store_true", default=None, help="pace files like a live source")
    p.add_argument("--max-frames", type=arguments.integer(0, 10 ** 12),
                   help="stop after N processed frames (0 = run forever)")
    p.add_argument("--headless", action="store_true", default=None, help="never open a preview window")
    p.add_argument("--events", type=arguments.output_file_or_stdout, help="JSON-lines events to FILE, or - for stdout")
    p.add_argument("--stats", type=arguments.output_file, help="stats JSON file, rewritten every second")
    p.add_argument("--score-threshold", type=arguments.number(0, 1))
    p.add_argument("--iou-threshold", type=arguments.number(0, 1))
    p.add_argument("--max-detections", type=arguments.integer(1, 10000))
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
    p.add_argument("--http-credentials", metavar="FILE", type=arguments.input_file,
                   help="file holding the web view password/token")
    p.add_argument("--http-insecure", action="store_true", default=None,
                   help="allow a non-loopback --http without credentials")


def build_parser():
    parser = arguments.Parser(prog="edgedet", description="Live SSD detection on a Coral Edge TPU or the CPU.")
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
    return config.replace(cfg, app=app_cfg, reference=ref_cfg, http=http_cfg), overrides


def run(args):
    """`edgedet run`: returns the exit code."""
    cfg, overrides = resolve_settings(args)
    logging.basicConfig(level=cfg.app.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    redact_logging()
    app = LiveApp(cfg, overrides, args.config or "<defaults>")
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: app.stop())
    try:
        if app.start():
            app.wait()
    finally:
        code = app.close()
    return code


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
