"""Tracking accuracy against the synthetic camera's ground truth (issue 15, item 1).

The demo model runs on every frame of `synthetic:640x480` scenes (the app's synthetic camera:
`MovingScene`, seed = the source's index), its detections go through the app's tracker with the
`objects:` section's defaults, and py-motmetrics compares the confirmed, matched tracks with the
shapes' true tracks (IoU >= 0.5 to match). Every frame is processed, as the live app does at 30 fps
(it keeps up with a wide margin), so the figure does not depend on the host's speed.

    python -m benchmarks.tracking --model models/demo [--frames 2000] [--seeds 0]

Prints MOTA, MOTP (1 - mean IoU of the matches), ID switches, fragmentations, the ground-truth
track-frames and ID switches per 100 of them (goals: MOTA >= 0.85, <= 1 switch per 100).

    python -m benchmarks.tracking --speed [--frames 200]

prints the tracker's own ms per frame, back to back, on 8 to 100 moving boxes a frame (the small
frames take its python path, the large ones numpy for their IoU pairs: app.tracking.pairs).
"""

import argparse
import statistics
import sys
import time

import numpy as np

from app.inference import live_model, runtime
from app.model import postprocess
from app.model.bundle import load_bundle
from app.config import ObjectsConfig
from app.model.nms import iou_matrix
from app.capture.synthetic import MovingScene
from app.tracking.tracker import Tracker

WIDTH, HEIGHT = 640, 480
SCENE_IDS = 1000000
METRICS = ("mota", "motp", "num_switches", "num_fragmentations", "num_objects", "num_false_positives",
           "num_misses")


def cpu_worker(bundle, threads=1):
    """The bundle's int8 model on the CPU, wired as the app wires it."""
    engine, key = runtime.open_bundle_engine(bundle, "cpu", "int8", num_threads=threads)
    return live_model.bundle_worker(engine, bundle, key, dict(bundle.postprocess, class_score_thresholds={}))


def iou_distances(truth, hypotheses, min_iou=0.5):
    """motmetrics' distance matrix: 1 - IoU, NaN (may not match) where IoU < min_iou.

    Args:
      truth: float [G, 4] pixel boxes (x0, y0, x1, y1).
      hypotheses: float [H, 4] pixel boxes (x0, y0, x1, y1).

    Returns:
      float64 [G, H]. (motmetrics.distances.iou_matrix does this too, but 1.4 calls np.asfarray,
      which numpy 2 removed.)
    """
    iou = iou_matrix(np.asarray(truth, np.float32).reshape(-1, 4), np.asarray(hypotheses, np.float32).reshape(-1, 4))
    return np.where(iou >= min_iou, 1.0 - iou, np.nan)


def track_scene(worker, num_classes, seed, frames, accumulator, settings=ObjectsConfig()):
    """Runs one scene through model and tracker and adds every frame to a motmetrics accumulator."""
    scene = MovingScene(WIDTH, HEIGHT, seed=seed)
    tracker = Tracker(num_classes, settings.min_hits, settings.max_age, settings.min_iou)
    for index in range(frames):
        image, truth, _, truth_ids = scene.next_truth()
        worker.writer.write(image)
        worker.interpreter.invoke()
        detections = worker.decoder.decode(worker.reader.read())
        boxes = postprocess.to_pixel_boxes(detections.boxes, HEIGHT, WIDTH)
        tracks = tracker.update(boxes, detections.class_ids, detections.scores, now=index / 30.0)
        hyp = tracks.matched
        truth_px = postprocess.to_pixel_boxes(truth, HEIGHT, WIDTH)
        distances = iou_distances(truth_px, tracks.boxes[hyp])
        # Ids made unique across scenes: motmetrics wants numbers.
        accumulator.update(seed * SCENE_IDS + truth_ids, seed * SCENE_IDS + tracks.ids[hyp], distances,
                           frameid=seed * frames + index)


def measure(worker, num_classes, seeds, frames, settings=ObjectsConfig()):
    """dict of METRICS over `frames` frames of each seed's scene (one accumulator, so the sums add)."""
    import motmetrics
    accumulator = motmetrics.MOTAccumulator(auto_id=False)
    for seed in seeds:
        track_scene(worker, num_classes, seed, frames, accumulator, settings)
    summary = motmetrics.metrics.create().compute(accumulator, metrics=METRICS, name="all")
    return {k: float(summary[k].iloc[0]) for k in METRICS}


# --speed: boxes a frame of the tracker's own timing (the demo bundle keeps at most 15 detections a frame, its
# postprocess max_detections; other models keep more).
SPEED_BOXES = (8, 16, 32, 64, 100)


def moving_boxes(count, frames, seed=0):
    """Per frame (boxes float32 [K, 4] pixels (x0, y0, x1, y1), class ids, scores) of `count` boxes
    of 20-60 px moving up to 4 px a frame over 640x480 with 1 px jitter, 10% of them missing at random."""
    rng = np.random.RandomState(seed)
    corner, size = rng.uniform(0, 600, (count, 2)), rng.uniform(20, 60, (count, 2))
    speed = rng.uniform(-4, 4, (count, 2))
    found = []
    for index in range(frames):
        at = corner + speed * index + rng.normal(0, 1, (count, 2))
        seen = rng.uniform(0, 1, count) > 0.1
        boxes = np.concatenate([at, at + size], axis=1)[seen].astype(np.float32)
        found.append((boxes, rng.randint(0, 3, len(boxes)), rng.uniform(0.3, 1, len(boxes)).astype(np.float32)))
    return found


def print_speed(frames):
    """ms per Tracker.update back to back on moving_boxes frames of each SPEED_BOXES count."""
    for count in SPEED_BOXES:
        tracker, times = Tracker(3), []
        for index, (boxes, class_ids, scores) in enumerate(moving_boxes(count, frames)):
            start = time.perf_counter()
            tracker.update(boxes, class_ids, scores, now=index / 30.0)
            times.append(time.perf_counter() - start)
        print("{:3d} boxes a frame: Tracker.update {:.3f} ms median, {:.3f} ms mean (back to back, {} frames)".format(
            count, 1000 * statistics.median(times[10:]), 1000 * statistics.mean(times[10:]), frames))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/demo", help="bundle directory")
    parser.add_argument("--frames", type=int, default=2000, help="frames per scene")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="scene seeds (0 = the first --source)")
    parser.add_argument("--speed", action="store_true", help="only the tracker's ms per frame on 8-100 moving boxes")
    args = parser.parse_args(argv)
    if args.speed:
        print_speed(min(args.frames, 200))
        return 0
    bundle = load_bundle(args.model)
    m = measure(cpu_worker(bundle), len(bundle.labels), args.seeds, args.frames)
    per_100 = 100.0 * m["num_switches"] / max(m["num_objects"], 1)
    print("synthetic:{}x{} seeds {}, {} frames each, model {}".format(WIDTH, HEIGHT, args.seeds, args.frames,
                                                                      args.model))
    print("MOTA {:.3f} (goal >= 0.85) | MOTP {:.3f} | ID switches {:.0f} = {:.2f} per 100 ground-truth "
          "track-frames (goal <= 1) | fragmentations {:.0f} | track-frames {:.0f} | FP {:.0f} | misses {:.0f}"
          .format(m["mota"], m["motp"], m["num_switches"], per_100, m["num_fragmentations"], m["num_objects"],
                  m["num_false_positives"], m["num_misses"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
