"""edgedet's Python API: live detection and tracked objects in your own program.

    import edgedet

    for frame in edgedet.stream(model="models/demo", source="synthetic:640x480@30", max_frames=100):
        for d in frame.detections:          # this frame's boxes
            print(d.label, d.score, d.box)
        for o in frame.objects:             # tracked objects (id, label, zones, ...)
            print(o["id"], o["label"], o["current_zones"])

    detector = edgedet.Detector("models/demo")
    detections = detector.detect(cv2.imread("photo.jpg"))

`stream` runs exactly what `edgedet run` runs (app.live_app.LiveApp: the capture, inference and
output threads, the object stage, the float-reference check, the web view if `http` is given);
its keyword arguments are the command line's flags. Frames reach your loop through a bounded
queue: from live sources the oldest waiting frame is dropped when your loop falls behind, so a
slow consumer never slows the pipeline; from files and folders every frame
comes, in order. Boxes are source-frame pixels (x0, y0, x1, y1). Bad input raises
app.errors.UserError with the CLI's one-line message.
"""

import collections
import threading

from app import cli
from app.model import postprocess
from app.live_app import LiveApp
from app.errors import UserError

__all__ = ["Detection", "Frame", "stream", "Detector"]

# One detection: label str, class_id int (0-based), score float, box (x0, y0, x1, y1) pixels;
# track_id int of its tracked object, -1 while not (yet) an object.
Detection = collections.namedtuple("Detection", "label class_id score box track_id")
# One processed frame: source name, index (1-based per source), time (wall clock s), image (BGR
# uint8 [H, W, 3], the frame as captured), detections (list of Detection), objects (list of dict,
# the object-event fields of every tracked object in the frame), events (this frame's object events).
Frame = collections.namedtuple("Frame", "source index time image detections objects events")
QUEUE_SIZE = 4
POLL_S = 0.1


def _flags(model, source, config, settings):
    """The `edgedet run` argument list of the API's keyword arguments."""
    argv = ["run", "--headless", "--model", str(model)]
    sources = source if isinstance(source, (list, tuple)) else [source]
    for spec in sources:
        argv += ["--source", str(spec)]
    if config:
        argv += ["--config", str(config)]
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value is False:
            argv.append("--no-" + key.replace("_", "-"))
        elif value is not None:
            argv += [flag, str(value)]
    return argv


def _settings(model, source, config, settings):
    """(DeviceConfig, threshold overrides, config name) as `edgedet run` resolves them."""
    try:
        args = cli.build_parser().parse_args(_flags(model, source, config, settings))
    except UserError as e:  # app.arguments.Parser: a bad value is the CLI's message, an unknown flag a TypeError
        if not str(e).startswith("unrecognized arguments"):
            raise
        raise TypeError("unknown or bad keyword argument among {}; they are edgedet run's flags "
                        "(max_frames=, reference=False, events=, http=, threads=, ...)".format(sorted(settings))) from None
    return cli.resolve_settings(args) + (args.config or "<defaults>",)


def _frame(result):
    """The API's Frame of a pipeline FrameResult."""
    objects = result.objects
    ids = objects.detection_ids if objects is not None else [-1] * len(result.labels)
    d = result.detections
    found = [Detection(label, int(c), float(s), tuple(float(v) for v in box), int(i))
             for label, c, s, box, i in zip(result.labels, d.class_ids, d.scores, result.boxes, ids)]
    return Frame(result.source, result.frame, result.time, result.raw, found,
                 objects.objects if objects is not None else [], objects.events if objects is not None else [])


class _FrameQueue(object):
    """The pipeline sink behind `stream`: a bounded queue of FrameResults.

    Attributes:
      block: wait for room (files: every frame) instead of dropping the oldest (live sources).
      dropped: results dropped because the consumer fell behind.
    """

    def __init__(self, size=QUEUE_SIZE):
        self._items = collections.deque()
        self._size, self.block = size, False
        self._cond = threading.Condition()
        self.closed = False
        self.dropped = 0

    def write(self, result):
        with self._cond:
            while self.block and len(self._items) >= self._size and not self.closed:
                self._cond.wait(POLL_S)
            if len(self._items) >= self._size:
                self._items.popleft()
                self.dropped += 1
            self._items.append(result)
            self._cond.notify_all()

    def get(self, timeout):
        """The oldest waiting result, or None after `timeout` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self):
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def stream(model="models/demo", source="synthetic", config=None, **settings):
    """Runs live detection and yields every processed Frame until the sources end or the loop stops.

    Args:
      model: bundle directory or a foreign .tflite (then also labels="labels.txt").
      source: a --source value, or a list of them (camera index, URL, file, folder, synthetic...).
      config: optional config.yaml (app:, postprocess:, reference:, http:, objects:, mqtt: sections).
      **settings: `edgedet run` flags by name: max_frames=100, reference=False, events="out.jsonl",
        http="8080", threads=1, runtime="cpu", score_threshold=0.5, ...

    Yields:
      Frame. No frame comes when the start-up float-reference check asks to exit
      (reference.on_mismatch: exit); the app's logs say why.
    """
    cfg, overrides, where = _settings(model, source, config, settings)
    queue = _FrameQueue()
    app = LiveApp(cfg, overrides, where, extra_sinks=[queue])
    queue.block = not any(s.live for s in app.sources)
    try:
        if not app.start():
            return
        while True:
            result = queue.get(POLL_S)
            if result is None and not app.pipeline.running:
                result = queue.get(0)  # the pipeline ended: what is left, then stop
                if result is None:
                    return
            if result is not None:
                yield _frame(result)
    finally:
        app.stop()
        queue.close()
        app.close()


class Detector(object):
    """One model for single images, opened as the live app opens it (Edge TPU when there is one).

    Args:
      model: bundle directory or a foreign .tflite (then also labels="labels.txt").
      **settings: `edgedet run` flags by name: runtime="cpu", threads=1, score_threshold=0.5, ...
    """

    def __init__(self, model="models/demo", **settings):
        from app.inference import workers
        cfg, overrides, _ = _settings(model, "synthetic", None, settings)
        self._live = workers.LiveModel(cfg.app, overrides)
        self._worker = self._live.pairs[0][1]
        self.labels = self._live.labels

    def detect(self, image):
        """Detections of one BGR uint8 [H, W, 3] image (OpenCV's layout), boxes in its pixels.

        Returns:
          list of Detection (track_id -1: single images are not tracked), best score first.
        """
        import numpy as np
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError("expected a BGR uint8 [H, W, 3] image, got {} {}".format(image.dtype, image.shape))
        worker = self._worker
        worker.writer.write(image)
        worker.interpreter.invoke()
        d = worker.decoder.decode(worker.reader.read())
        boxes = postprocess.to_pixel_boxes(d.boxes, image.shape[0], image.shape[1])
        return [Detection(self.labels.get(int(c), str(int(c))), int(c), float(s), tuple(float(v) for v in box), -1)
                for c, s, box in zip(d.class_ids, d.scores, boxes)]
