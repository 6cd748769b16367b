"""Live-path benchmark (issue 4 "Performance"): three loops on one bundle, CPU runtime.

1. inference alone: set the input once, invoke in a loop;
2. sequential: read a 640x480 synthetic frame -> resize -> invoke -> decode/NMS -> draw, one
   thread (the shape of Coral's OpenCV camera example);
3. threaded: the real app pipeline on synthetic:640x480@0;
4. the same pipeline on 30 pre-rendered frames replayed (a source that costs no CPU), which
   shows how much of (3) the synthetic renderer itself takes on a 2-core machine.

Then the outputs of issue 15 (`--config`, benchmarks/all_on.yaml by default: tracking, two zones,
a filter, object events to a file, snapshots, clips and MQTT to a mosquitto started on loopback;
any section the app knows):
5. the whole LiveApp with that config ("on") against the same app with its objects and mqtt
   sections alone ("objects": tracking, zones, object events, MQTT) and with every output off
   ("off": no object stage, so no object events, snapshots, clips or MQTT), in `--repeat` interleaved rounds (the order turns), at the app's
   interpreter thread setting, in three regimes (`--regimes`): "unpaced" (synthetic:640x480@0,
   CPU-bound on this machine, so every CPU-ms the outputs take is lost fps), "camera"
   (synthetic:640x480@30) and "accelerator" (unpaced, each invoke padded with a sleep to
   ACCELERATOR_INVOKE_S: an Edge TPU's invoke, which leaves the CPU free). Each side also gives
   the process CPU time per frame;
6. the output thread's own cost of the object stage and every sink of that config per frame, on
   a 6-shape 640x480 scene's detections (inference done beforehand, frames 1/30 s apart), fed
   paced at 30 fps and back to back.

Each loop runs `--repeat` rounds, all loops taking turns within a round, and the medians are
printed: with the app's interpreter thread count (auto: all cores but one) and with all
cores, because on a small machine the app is fastest with one core left to capture and
output while the loops that do one thing at a time are fastest with every core. The ratios
are medians of per-round ratios (the host's speed drifts between rounds): the app at its own
setting against inference alone and the sequential loop at the same setting (the same
interpreter a plain `Interpreter(model_path)` gives on 2 cores: one thread), and against the
fastest of either setting. The host overhead per frame
(preprocess + decode/NMS + overlay, ms) is measured in the sequential loop, and the object
stage's own cost per frame on a 6-shape scene's detections.

It also prints the CPU-time ceiling of any pipeline on this machine: every frame costs the
renderer's time, the host overhead and the invoke's CPU time (measured on 1 thread, where
wall time is CPU time), and the cores can do at most `cores` ms of work per ms. With an
Edge TPU the invoke costs the CPU next to nothing and the ceiling is the TPU's own rate.

    python -m benchmarks.pipeline --model models/demo [--frames 300] [--repeat 5] [--threads 0]
    python -m benchmarks.pipeline --outputs-only [--config benchmarks/all_on.yaml] [--regimes unpaced camera accelerator]
                                  [--paced-frames 300]   # 5 and 6 alone
    python -m benchmarks.pipeline --parts    # 6's object stage, part by part (perf_counter around each)
    python -m benchmarks.pipeline --make-untrained /tmp/bench_bundle   # demo architecture, untrained

`--make-untrained` builds the demo architecture from config.yaml's model section
(training.model.build_ssd, random weights) and converts it with training's converter, for
timing before a trained bundle exists. Timings do not depend on the weights.
"""

import argparse
import collections
import contextlib
import functools
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np

from app.inference import live_model, runtime
from app.outputs import overlay
from app.model import postprocess
from app.model.bundle import load_bundle
from app import config
from app.live_app import LiveApp
from app.tracking import filters, objects, tracker, zones
from app.pipeline.threads import FrameResult, Pipeline
from app.capture.sources import SyntheticSource
from app.pipeline.stats import Stats
from app.capture.synthetic import MovingScene
from benchmarks import mqtt as mqtt_bench


def _worker(bundle, precision, threads):
    thresholds = dict(bundle.postprocess, class_score_thresholds={})
    engine, key = runtime.open_bundle_engine(bundle, "cpu", precision, num_threads=threads)
    return engine, live_model.bundle_worker(engine, bundle, key, thresholds)


def inference_alone(worker, frames):
    """fps of invoke() alone on a fixed input."""
    worker.writer.write(SyntheticSource(640, 480, 0).read()[0])
    for _ in range(5):
        worker.interpreter.invoke()
    start = time.perf_counter()
    for _ in range(frames):
        worker.interpreter.invoke()
    return frames / (time.perf_counter() - start)


def render_ms(frames):
    """Mean ms to render one synthetic 640x480 frame (the camera's own cost)."""
    source = SyntheticSource(640, 480, 0)
    source.read()
    start = time.perf_counter()
    for _ in range(frames):
        source.read()
    return 1000.0 * (time.perf_counter() - start) / frames


class _Result(object):
    """The fields overlay.draw_result reads."""

    def __init__(self, detections, boxes, labels):
        self.detections, self.boxes, self.labels = detections, boxes, labels


def sequential(worker, labels, frames):
    """(fps, mean ms per stage) of a one-thread read -> preprocess -> invoke -> decode -> draw loop."""
    source = SyntheticSource(640, 480, 0)
    times = {k: 0.0 for k in ("capture", "preprocess", "invoke", "decode", "overlay")}
    start = time.perf_counter()
    for i in range(frames + 5):
        if i == 5:  # warm-up done
            times = {k: 0.0 for k in times}
            start = time.perf_counter()
        t0 = time.perf_counter()
        image = source.read()[0]
        t1 = time.perf_counter()
        worker.writer.write(image)
        t2 = time.perf_counter()
        worker.interpreter.invoke()
        t3 = time.perf_counter()
        det = worker.decoder.decode(worker.reader.read())
        boxes = postprocess.to_pixel_boxes(det.boxes, 480, 640)
        names = [labels[int(c)] for c in det.class_ids]
        t4 = time.perf_counter()
        overlay.draw_result(image, _Result(det, boxes, names), "0.0 fps | inference 0.0 ms | cpu")
        t5 = time.perf_counter()
        for key, dt in zip(times, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4)):
            times[key] += dt
    elapsed = time.perf_counter() - start
    return frames / elapsed, {k: 1000.0 * v / frames for k, v in times.items()}


class _Shown(object):
    """A sink that wants the overlay drawn (as the preview window or web view would)."""
    wants_image = True

    def __init__(self):
        self.first = self.last = None
        self.count = 0

    def write(self, result):
        self.count += 1
        self.last = time.perf_counter()
        if self.count == 10:
            self.first = self.last

    def fps(self):
        """Frames per second from the 10th frame to the last."""
        return (self.count - 10) / (self.last - self.first)


class ReplaySource(object):
    """30 pre-rendered synthetic frames played in a loop: a source that costs (almost) no CPU,
    like a camera whose frames arrive by DMA. Separates the pipeline's cost from the renderer's."""
    live = False

    def __init__(self, count=30):
        synthetic = SyntheticSource(640, 480, 0)
        self.frames = [synthetic.read()[0] for _ in range(count)]
        self.name = "replay:640x480"
        self._i = 0

    def read(self):
        self._i += 1
        return self.frames[self._i % len(self.frames)].copy(), self.name

    def close(self):
        pass


def threaded(worker, labels, frames, source=None):
    """fps of the app pipeline on synthetic:640x480@0 (or `source`), from its 10th to its last frame."""
    sink = _Shown()
    source = source or SyntheticSource(640, 480, 0)
    pipeline = Pipeline([source], [worker], dict(enumerate(labels)), [sink],
                        Stats(runtime="bench"), max_frames=frames + 10, hud=overlay.hud_text,
                        draw=overlay.draw_result)
    pipeline.run()
    return sink.fps(), pipeline.stats.snapshot()


# ----------------------------------------------------------------------------- outputs (issue 15)

BENCH_SOURCE = "synthetic:640x480@0"
NO_OVERRIDES = {"class_score_thresholds": {}}  # the bundle's own thresholds (app.cli.resolve_settings' shape)
ALL_ON = os.path.join(os.path.dirname(os.path.abspath(__file__)), "all_on.yaml")
# An Edge TPU runs SSD MobileNetV2 in ~7-10 ms and leaves the CPU free meanwhile; the "accelerator"
# regime pads every invoke to this with a sleep (the CPU int8 invoke still runs inside it).
ACCELERATOR_INVOKE_S = 0.008
# The fps comparison's regimes: name -> (source, least seconds per invoke, what it shows).
REGIMES = collections.OrderedDict([
    ("unpaced", (BENCH_SOURCE, 0.0, "the source as fast as it renders: CPU-bound, every CPU-ms shows as fps")),
    ("camera", ("synthetic:640x480@30", 0.0, "a 30 fps camera: the app idles between frames")),
    ("accelerator", (BENCH_SOURCE, ACCELERATOR_INVOKE_S, "unpaced, invoke padded to >= {:g} ms with a sleep: "
                     "inference-bound, like a Coral".format(1000 * ACCELERATOR_INVOKE_S))),
])


SIDES = ("off", "objects", "on")


def outputs_config(path, model, threads, folder, side, source=BENCH_SOURCE, mqtt_port=None):
    """The DeviceConfig of one side of the comparison on `source`, without the reference check.

    Args:
      path: the "all on" config file (its objects.sources key BENCH_SOURCE is moved to `source`).
      folder: where the events (every side: the per-frame lines are not an issue-15 output),
        snapshots and clips go.
      side: "on" (the file as it is), "objects" (the defaults with the file's objects and mqtt
        sections: tracking, zones, object events and MQTT, what the issue's 0.3 ms goal names) or
        "off" (the defaults with the object stage off).
      mqtt_port: the loopback broker's port, for a file with mqtt: on.
    """
    on = config.load_device_config(path)
    sources = {source if key == BENCH_SOURCE else key: value for key, value in on.objects.sources.items()}
    on = config.replace(on, objects=config.replace(on.objects, sources=sources),
                        mqtt=config.replace(on.mqtt, host="127.0.0.1", port=mqtt_port))
    cfg = on if side == "on" else config.load_device_config(None)
    app_cfg = config.replace(cfg.app, model=model, sources=[source], num_threads=threads, headless=True,
                             events=os.path.join(folder, "events.jsonl"), stats="")
    cfg = config.replace(cfg, app=app_cfg, reference=config.replace(cfg.reference, enabled=False))
    if side == "off":
        return config.replace(cfg, objects=config.replace(cfg.objects, enabled=False))
    if side == "objects":
        return config.replace(cfg, objects=on.objects, mqtt=on.mqtt)
    return config.replace(cfg, snapshots=config.replace(cfg.snapshots, dir=os.path.join(folder, "snapshots")),
                          clips=config.replace(cfg.clips, dir=os.path.join(folder, "clips")))


class PaddedInvoke(object):
    """An interpreter whose invoke() lasts at least `seconds`, the rest slept (no CPU, GIL released)."""

    def __init__(self, interpreter, seconds):
        self._interpreter, self._seconds = interpreter, seconds

    def invoke(self):
        end = time.perf_counter() + self._seconds
        self._interpreter.invoke()
        time.sleep(max(0.0, end - time.perf_counter()))

    def __getattr__(self, name):
        return getattr(self._interpreter, name)


def app_fps(cfg, frames, where, invoke_s=0.0):
    """(fps from the 10th to the last frame, process CPU ms per frame, stage ms) of a LiveApp
    started with `cfg`, its invokes padded to `invoke_s` when > 0."""
    shown = _Shown()
    app = LiveApp(config.replace(cfg, app=config.replace(cfg.app, max_frames=frames + 10)), NO_OVERRIDES, where,
                  extra_sinks=[shown])
    if invoke_s:
        app.pipeline.replace_workers([w._replace(interpreter=PaddedInvoke(w.interpreter, invoke_s))
                                      for w in app.pipeline.workers])
    cpu = time.process_time()
    app.start()
    app.wait()
    cpu_ms = 1000.0 * (time.process_time() - cpu) / (frames + 10)
    stages = app.stats.snapshot()["stages_ms"]
    app.close()
    return shown.fps(), cpu_ms, stages


def outputs_rounds(args, threads, regime, mqtt_port):
    """Interleaved rounds of the app on each side (SIDES; the order turns round by round) in one regime.

    Returns:
      {side: [fps per round], side + " cpu": [CPU ms per frame per round], "stages": the last on-round's stage ms}.
    """
    source, invoke_s, _ = REGIMES[regime]
    frames = _regime_frames(args, regime)
    runs = {key: [] for side in SIDES for key in (side, side + " cpu")}
    with tempfile.TemporaryDirectory(prefix="edgedet-bench-") as folder:
        sides = {side: outputs_config(args.config, args.model, threads, folder, side, source, mqtt_port)
                 for side in SIDES}
        for i in range(args.repeat):
            for side in SIDES[i % 3:] + SIDES[:i % 3]:
                fps, cpu_ms, stages = app_fps(sides[side], frames, args.config, invoke_s)
                runs[side].append(fps)
                runs[side + " cpu"].append(cpu_ms)
                if side == "on":
                    runs["stages"] = stages
    return runs


def _six_shape_frames(worker, frames):
    """(raw outputs, FrameResult without detections yet) of a 6-shape 640x480 MovingScene, 1/30 s apart."""
    scene = MovingScene(640, 480, seed=0, num_shapes=6)
    found, start = [], time.time()
    for i in range(frames):
        image = scene.next_image()
        worker.writer.write(image)
        worker.interpreter.invoke()
        found.append((worker.reader.read(), FrameResult(BENCH_SOURCE, i + 1, BENCH_SOURCE, start + i / 30.0, image,
                                                        image, None, None, None, worker.model, {})))
    return found


def _decoded(worker, labels, raw, result):
    """`result` with the detections of `raw`, as Pipeline._finish makes it (decode/NMS, pixel boxes, labels)."""
    d = worker.decoder.decode(raw)
    return result._replace(detections=d, boxes=postprocess.to_pixel_boxes(d.boxes, 480, 640),
                           labels=[labels[int(c)] for c in d.class_ids])


def _output_ms(app, stages, frames, paced):
    """ms per frame on the output thread of the object stage (if any, with its counts for the stats)
    and `app`'s sinks, run after the frame's decode as Pipeline._finish runs them (the decode is
    timed apart: it is the same on both sides, and it warms numpy's code up for the object stage
    as it does in the app), with the frames paced at their 30 fps or back to back.

    Returns:
      [ms per frame] of the object stage and sinks; {part: [ms per frame]} of the decode, the object
      stage and each sink; the mean objects per frame (all after the first 10 frames).
    """
    worker, labels = app.live.pairs[0][1], app.live.labels
    times, by_sink, counts, start = [], {}, [], time.perf_counter()
    for i, (raw, result) in enumerate(frames):
        if paced:  # a 30 fps camera
            time.sleep(max(0.0, start + i / 30.0 - time.perf_counter()))
        t_decode = time.perf_counter()
        result = _decoded(worker, labels, raw, result)
        t0 = time.perf_counter()
        by_sink.setdefault("decode", []).append(1000.0 * (t0 - t_decode))
        if stages is not None:
            result = result._replace(objects=stages.update(result))
            app.stats.set_objects(result.source, objects.counts(result.objects.objects))
            by_sink.setdefault("object stage", []).append(1000.0 * (time.perf_counter() - t0))
        events = result.objects.events if result.objects is not None else []
        for sink in app.pipeline.sinks:
            t1 = time.perf_counter()
            sink.write(result)
            if events and hasattr(sink, "object_events"):
                sink.object_events(events)
            by_sink.setdefault(type(sink).__name__, []).append(1000.0 * (time.perf_counter() - t1))
        times.append(1000.0 * (time.perf_counter() - t0))
        counts.append(len(result.objects.objects) if result.objects is not None else 0)
    return times[10:], {k: v[10:] for k, v in by_sink.items()}, float(np.mean(counts[10:]))


def outputs_cost(args, threads, frames, paced, mqtt_port, sides=SIDES):
    """Output-thread ms per frame of each side (SIDES) on the same 6-shape frames (paced at 30 fps,
    or back to back: on this VM a thread woken every 33 ms runs the same code several times slower
    than one kept busy, cold caches; the truth for a camera lies between).

    Returns:
      {side: [ms per frame], "sinks": {side: {"decode", "object stage" or sink class: [ms per frame]}},
       "objects per frame": mean objects per frame}, for each of `sides`.
    """
    found = {"sinks": {}}
    with tempfile.TemporaryDirectory(prefix="edgedet-bench-") as folder:
        scene = None
        for side in sides:
            cfg = outputs_config(args.config, args.model, threads, folder, side, mqtt_port=mqtt_port)
            app = LiveApp(cfg, NO_OVERRIDES, args.config)  # not started: its sinks as the app builds them
            labels = app.live.labels
            names = [labels.get(i, str(i)) for i in range(max(labels) + 1)]
            scene = scene or _six_shape_frames(app.live.pairs[0][1], frames)
            stages = objects.build_stages(cfg.objects, app.sources, cfg.app.sources, names, args.config)
            found[side], found["sinks"][side], found["objects per frame"] = _output_ms(app, stages, scene, paced)
            app.close()
    return found
def print_outputs(args, threads):
    """The fps comparison in each regime of `--regimes`, then the output thread's cost per frame."""
    with tempfile.TemporaryDirectory(prefix="edgedet-broker-") as folder:
        broker, port = _broker(args.config, folder)
        try:
            for regime in args.regimes:
                _print_rounds(args, regime, outputs_rounds(args, threads, regime, port))
            for paced in (True, False):
                _print_cost(outputs_cost(args, threads, min(args.frames, 300), paced, port),
                            "paced at 30 fps" if paced else "back to back")
        finally:
            if broker is not None:
                broker.kill()
                broker.wait()


# --parts: the object stage's parts timed with perf_counter (where each is looked up, its name there, what it is).
PARTS = (
    (objects, "listed", "inputs as python lists (3 arrays)"),
    (filters, "kept", "filters"),
    (tracker.Tracker, "track", "tracker"),
    (tracker._Track, "predict", "  predictions (per track)"),
    (tracker, "duplicate_parents", "  duplicates (IoU pairs within the detections)"),
    (tracker, "iou_pairs", "  IoU pairs, predictions x detections"),
    (tracker, "greedy_pairs", "  greedy matching"),
    (tracker._Track, "correct", "  alpha-beta corrections (per match)"),
    (tracker._Track, "vote", "  label votes (per detection)"),
    (tracker.Tracker, "_lists", "  the frame's lists"),
    (zones, "inside_each", "zone tests"),
    (objects.SourceObjects, "_advance", "objects: zones, events, fields"),
    (objects, "_rounded_values", "  event values rounded"),
)


@contextlib.contextmanager
def timed_parts(parts):
    """Wraps each (owner, name, label) of `parts` with a perf_counter timer while the block runs;
    yields {label: total seconds}. Each wrapper adds ~0.3 us a call back to back (more paced)."""
    totals, saved = collections.OrderedDict((label, 0.0) for _, _, label in parts), []

    def wrap(function, label):
        @functools.wraps(function)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                totals[label] += time.perf_counter() - start
        return timed

    for owner, name, label in parts:
        saved.append((owner, name, owner.__dict__[name]))
        setattr(owner, name, wrap(getattr(owner, name), label))
    try:
        yield totals
    finally:
        for owner, name, original in saved:
            setattr(owner, name, original)


def print_parts(args, threads):
    """us per frame of each part of the object stage (PARTS), the "objects" side paced and back to back."""
    frames = min(args.frames, 300)
    with tempfile.TemporaryDirectory(prefix="edgedet-broker-") as folder:
        broker, port = _broker(args.config, folder)
        try:
            for paced in (True, False):
                with timed_parts(PARTS) as totals:
                    cost = outputs_cost(args, threads, frames, paced, port, sides=("objects",))
                stage_us = 1000 * statistics.median(cost["sinks"]["objects"]["object stage"])
                print("-- the object stage's parts, us per frame (mean over {} frames, timers included), {}: "
                      "object stage {:.1f} us median".format(frames, "paced at 30 fps" if paced else "back to back",
                                                            stage_us))
                for label, total in totals.items():
                    print("{:48s} {:6.1f}".format(label, 1e6 * total / frames))
        finally:
            if broker is not None:
                broker.kill()
                broker.wait()


def _broker(path, folder):
    """(process, port) of a loopback mosquitto when the "all on" config has mqtt: on, else (None, None)."""
    if not config.load_device_config(path).mqtt.enabled:
        return None, None
    if not shutil.which("mosquitto"):
        raise SystemExit("{} has mqtt: on but mosquitto is not installed (apt-get install mosquitto)".format(path))
    return mqtt_bench.start_broker(folder)


def _regime_frames(args, regime):
    """Frames per run: --frames unpaced, --paced-frames where the source or the invoke sets the pace."""
    return args.frames if regime == "unpaced" else args.paced_frames


def _print_rounds(args, regime, runs):
    source, _, what = REGIMES[regime]
    print("-- outputs of {}, {} regime: {} (LiveApp on {}, {} frames, {} interleaved rounds)".format(
        args.config, regime, what, source, _regime_frames(args, regime), args.repeat))
    for side in SIDES:
        print("outputs {:7s} : {:7.1f} fps median (rounds {}); process CPU {:.2f} ms per frame median".format(
            side, statistics.median(runs[side]), ", ".join("{:.1f}".format(v) for v in runs[side]),
            statistics.median(runs[side + " cpu"])))
    for a, b, goal in (("on", "off", "; goal >= 0.97"), ("objects", "off", ""), ("on", "objects", "")):
        ratios = [x / y for x, y in zip(runs[a], runs[b])]
        print("{:>7s}/{:7s} : {:.3f} median of per-round ratios (rounds {:.3f}-{:.3f}{})".format(
            a, b, statistics.median(ratios), min(ratios), max(ratios), goal))
    print("on, stage ms    : {}".format(", ".join("{} {:.3f}".format(k, v) for k, v in runs["stages"].items())))


def _print_cost(cost, how):
    print("-- output thread per frame after the decode, 6-shape 640x480 scene, {}".format(how))
    for side in SIDES:
        ms = sorted(cost[side])
        print("output thread {:7s}: {:.3f} ms per frame median, {:.3f} ms 95th percentile, {:.3f} ms mean".format(
            side, statistics.median(ms), ms[int(0.95 * len(ms))], statistics.mean(ms)))
    for side, goal in (("objects", "; goal <= 0.3 ms: tracking, zones, events, MQTT"), ("on", "")):
        print("{:>7s} - off   : {:.3f} ms per frame median, {:.3f} ms mean ({:.1f} objects per frame{})".format(
            side, statistics.median(cost[side]) - statistics.median(cost["off"]),
            statistics.mean(cost[side]) - statistics.mean(cost["off"]), cost["objects per frame"], goal))
    for side in SIDES:
        print("  {:7s} median/mean ms: {}".format(side, ", ".join(
            "{} {:.3f}/{:.3f}".format(k, statistics.median(v), statistics.mean(v)) for k, v in cost["sinks"][side].items())))


def make_untrained(out):
    """Demo-architecture bundle with random weights (needs TensorFlow); returns `out`."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from app.model import anchors as app_anchors
    from app.capture.synthetic import render_scene
    from training import convert_tflite
    from training.config import load_config
    from training.model import build_ssd
    cfg = load_config("config.yaml") if os.path.exists("config.yaml") else load_config(None)
    model = build_ssd(cfg.model)
    h, w = cfg.model.input_height, cfg.model.input_width
    os.makedirs(out, exist_ok=True)
    saved = os.path.join(out, "saved_model")
    convert_tflite.save_batch1_savedmodel(model, h, w, saved)
    rng = np.random.RandomState(0)
    images = [render_scene(rng, 240, 320)[0][..., ::-1] for _ in range(8)]
    blobs = {"float": convert_tflite.to_float_tflite(saved),
             "int8": convert_tflite.to_int8_tflite(saved, convert_tflite.calibration_inputs(images, h, w))}
    from ai_edge_litert.interpreter import Interpreter
    models = {}
    for kind, blob in blobs.items():
        path = os.path.join(out, "model_{}.tflite".format(kind))
        with open(path, "wb") as f:
            f.write(blob)
        interp = Interpreter(model_path=path)
        sig = interp._get_full_signature_list()["serving_default"]["outputs"]
        names = {d["index"]: d["name"] for d in interp.get_output_details()}
        models[kind] = {"file": os.path.basename(path),
                        "outputs": {r: names[sig[r]] for r in ("box_encodings", "class_logits")}}
    anchors = app_anchors.anchors_from_config(cfg.model)
    np.save(os.path.join(out, "anchors.npy"), anchors)
    b = cfg.model.box_coder
    meta = {"format_version": 1, "labels": list(cfg.model.labels),
            "input": {"height": h, "width": w, "color": "RGB", "resize": "stretch", "float_range": [-1.0, 1.0]},
            "num_anchors": int(len(anchors)),
            "box_coder": {"y_scale": b.y_scale, "x_scale": b.x_scale, "height_scale": b.height_scale,
                          "width_scale": b.width_scale},
            "score_converter": cfg.model.score_converter, "models": models,
            "source": {"created": "benchmarks/pipeline.py --make-untrained (random weights)"}}
    with open(os.path.join(out, "model.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return out


LOOPS = ("alone", "sequential", "threaded", "replay")


def _round(bundle, worker, frames):
    """fps of each loop once, plus the sequential loop's stage ms and the threaded app's stats."""
    fps = {"alone": inference_alone(worker, frames)}
    fps["sequential"], seq_ms = sequential(worker, bundle.labels, frames)
    fps["threaded"], snap = threaded(worker, bundle.labels, frames)
    fps["replay"] = threaded(worker, bundle.labels, frames, ReplaySource())[0]
    return fps, seq_ms, snap["stages_ms"]


def measure(bundle, precision, thread_counts, frames, repeat):
    """Runs every loop `repeat` times for each interpreter thread count, all taking turns within
    each round, so a slow spell of the shared host hits the loops of one round alike.

    Returns:
      one dict per thread count: median fps per loop, the per-round fps lists, the last
      round's stage ms, and the engine.
    """
    setups = [_worker(bundle, precision, t) for t in thread_counts]
    results = [{"runs": {k: [] for k in LOOPS}, "engine": engine, "threads": engine.num_threads}
               for engine, _ in setups]
    for _ in range(repeat):
        for result, (_, worker) in zip(results, setups):
            fps, result["seq_ms"], result["stages"] = _round(bundle, worker, frames)
            for k in LOOPS:
                result["runs"][k].append(fps[k])
    for result in results:
        result.update({k: statistics.median(v) for k, v in result["runs"].items()})
    return results


def _ratio(numerator, denominator):
    """Median of the per-round ratios, and their range."""
    ratios = [a / b for a, b in zip(numerator, denominator)]
    return "{:.2f} (rounds {:.2f}-{:.2f})".format(statistics.median(ratios), min(ratios), max(ratios))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/demo", help="bundle directory")
    parser.add_argument("--precision", default="int8", choices=("int8", "float"))
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=5, help="rounds per loop; medians are printed")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU interpreter threads of the app (0 = auto, as the app: all cores but one)")
    parser.add_argument("--make-untrained", metavar="DIR", help="build an untrained demo-architecture bundle")
    parser.add_argument("--config", default=ALL_ON, help="config.yaml of the outputs' 'all on' side")
    parser.add_argument("--outputs-only", action="store_true", help="only the outputs comparison and cost")
    parser.add_argument("--parts", action="store_true", help="only the object stage's parts, timed (PARTS)")
    parser.add_argument("--regimes", nargs="*", choices=list(REGIMES), default=list(REGIMES),
                        help="fps regimes of the outputs comparison (none: only the output thread's cost)")
    parser.add_argument("--paced-frames", type=int, default=300,
                        help="frames per run in the camera and accelerator regimes (--frames: unpaced)")
    args = parser.parse_args(argv)
    if args.make_untrained:
        print("bundle written to", make_untrained(args.make_untrained))
        return 0
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    bundle = load_bundle(args.model)
    cores = os.cpu_count() or 1
    app_threads = runtime.cpu_threads(args.threads)
    if args.parts:
        print_parts(args, app_threads)
        return 0
    if args.outputs_only:
        print_outputs(args, app_threads)
        return 0
    results = measure(bundle, args.precision, sorted({app_threads, cores}, key=lambda t: t != app_threads),
                      args.frames, args.repeat)
    app = results[0]
    print(runtime.describe(app["engine"]))
    print("input {}x{}, {} anchors, {} frames per loop, median of {} rounds, {} cores".format(
        bundle.input_width, bundle.input_height, len(bundle.anchors), args.frames, args.repeat, cores))
    for r in results:
        print("-- interpreter threads: {}{}".format(r["threads"], " (the app's setting)" if r is app else ""))
        print("inference alone : {:7.1f} fps".format(r["alone"]))
        print("sequential loop : {:7.1f} fps  (per frame ms: {})".format(
            r["sequential"], ", ".join("{} {:.2f}".format(k, v) for k, v in r["seq_ms"].items())))
        print("threaded app    : {:7.1f} fps  (stage ms: {})".format(
            r["threaded"], ", ".join("{} {:.2f}".format(k, v) for k, v in r["stages"].items())))
        print("threaded, replay: {:7.1f} fps  (same pipeline, pre-rendered frames: no renderer cost)".format(
            r["replay"]))
    # Per round: the fastest inference alone / sequential loop of either thread count.
    fastest = {k: [max(v) for v in zip(*(r["runs"][k] for r in results))] for k in ("alone", "sequential")}
    thr = app["runs"]["threaded"]
    print("-- ratios of the threaded app at its own setting (median of per-round ratios)")
    print("threaded/inference alone, same threads : {} (goal >= 0.9)".format(_ratio(thr, app["runs"]["alone"])))
    print("threaded/inference alone, fastest      : {}".format(_ratio(thr, fastest["alone"])))
    print("threaded/sequential, same threads      : {} (goal >= 1.3)".format(_ratio(thr, app["runs"]["sequential"])))
    print("threaded/sequential, fastest sequential: {}".format(_ratio(thr, fastest["sequential"])))
    seq_ms = app["seq_ms"]
    host = seq_ms["preprocess"] + seq_ms["decode"] + seq_ms["overlay"]
    print("host overhead   : {:.2f} ms per 640x480 frame (preprocess {:.2f} + decode/NMS {:.2f} + overlay {:.2f}; "
          "goal <= 2)".format(host, seq_ms["preprocess"], seq_ms["decode"], seq_ms["overlay"]))
    _, one_thread = _worker(bundle, args.precision, 1)
    invoke_cpu_ms = 1000.0 / inference_alone(one_thread, args.frames)
    render = render_ms(args.frames)
    ceiling = 1000.0 * cores / (invoke_cpu_ms + render + host)
    print("CPU ceiling     : {:7.1f} fps = {} cores / (invoke {:.2f} CPU-ms on 1 thread + render {:.2f} + host {:.2f}); "
          "ceiling/fastest inference {:.2f}".format(ceiling, cores, invoke_cpu_ms, render, host,
                                                    ceiling / max(r["alone"] for r in results)))
    print_outputs(args, app_threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
