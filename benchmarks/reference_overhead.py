"""What the float-reference thread costs the live path (issue 5: a drop of at most 5%).

Runs the real app pipeline on one bundle (CPU runtime, int8 live model) twice per round:
without and with the float-reference guard (app.service.ReferenceGuard sampling one frame
every `--interval` seconds, float model on one CPU thread, as the app does it), for
`--seconds` each, alternating to spread out the load of a shared machine. The source is
30 pre-rendered 640x480 frames replayed (benchmarks.pipeline.ReplaySource), so the renderer
does not blur the comparison. Prints processed fps of each run, the medians and the drop.

    python -m benchmarks.reference_overhead --model models/demo [--seconds 30] [--rounds 2]
    python -m benchmarks.pipeline --make-untrained /tmp/b && python -m benchmarks.reference_overhead --model /tmp/b
"""

import argparse
import statistics
import sys
import threading
import time

from app.outputs import overlay
from app import service
from app.model.bundle import load_bundle
from app.config import ReferenceConfig
from app.pipeline.threads import Pipeline
from app.pipeline.stats import Stats
from benchmarks.pipeline import ReplaySource, _worker

WARMUP_FRAMES = 10


class _Counter(object):
    """Counts frames after the warm-up, with the time of the first counted one."""

    def __init__(self):
        self.count, self.first = 0, None

    def write(self, result):
        self.count += 1
        if self.count == WARMUP_FRAMES:
            self.first = time.perf_counter()


def run_once(bundle, threads, seconds, interval_s, source):
    """Processed fps of one run; with a reference guard when interval_s is not None.

    Returns:
      (fps, number of reference checks or None).
    """
    engine, worker = _worker(bundle, "int8", threads)
    stats, counter = Stats("bench", "int8", threads), _Counter()
    sinks = [counter]
    guard = None
    if interval_s is not None:
        thresholds = dict(bundle.postprocess, class_score_thresholds=None)
        guard = service.ReferenceGuard(bundle, thresholds, engine, "int8",
                                       ReferenceConfig(interval_s=interval_s, on_mismatch="warn"), threads, stats)
        sinks.append(guard)
    pipeline = Pipeline([source], [worker], dict(enumerate(bundle.labels)), sinks, stats,
                        hud=overlay.hud_text, draw=overlay.draw_result)
    if guard is not None:
        guard.attach(pipeline)
        guard.start()
    timer = threading.Timer(seconds, pipeline.stop)
    pipeline.start()
    timer.start()
    pipeline.wait()
    end = time.perf_counter()
    pipeline.join()
    checks = None
    if guard is not None:
        guard.join(5.0)
        checks = guard.checker.checks
    return (counter.count - WARMUP_FRAMES) / (end - counter.first), checks


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="models/demo", help="bundle directory (needs model_float.tflite)")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each run")
    parser.add_argument("--rounds", type=int, default=2, help="without/with pairs")
    parser.add_argument("--interval", type=float, default=10.0, help="reference.interval_s")
    parser.add_argument("--threads", type=int, default=0, help="live CPU interpreter threads (0 = auto: all cores but one)")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.model)
    source = ReplaySource()
    without, with_ref = [], []
    for r in range(args.rounds):
        fps, _ = run_once(bundle, args.threads, args.seconds, None, source)
        without.append(fps)
        print("round {}: without reference {:.2f} fps".format(r + 1, fps))
        fps, checks = run_once(bundle, args.threads, args.seconds, args.interval, source)
        with_ref.append(fps)
        print("round {}: with reference    {:.2f} fps ({} checks, interval {:g} s)".format(r + 1, fps, checks,
                                                                                     args.interval))
        sys.stdout.flush()
    a, b = statistics.median(without), statistics.median(with_ref)
    print("median fps without the reference thread: {:.2f}".format(a))
    print("median fps with the reference thread:    {:.2f}".format(b))
    print("drop: {:.1f}% (goal <= 5%)".format(100.0 * (a - b) / a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
