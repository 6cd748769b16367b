"""Pipeline FrameResults with real object stages, for the snapshot, clip and web-view event tests.

A 320x240 frame of uniform grey with one white square moving right; the detection's score is
given per frame. The object stage is the real app.tracking.objects.SourceObjects.
"""

import numpy as np

from app.config import ObjectsConfig, SourceObjectsConfig
from app.model.postprocess import Detections
from app.pipeline.threads import FrameResult
from app.tracking.objects import SourceObjects

WIDTH, HEIGHT = 320, 240
LABELS = ["circle", "square", "triangle"]
SETTINGS = ObjectsConfig(min_hits=2, max_age=2, update_interval_s=0.0)


def stage(source="cam"):
    return SourceObjects(source, LABELS, SETTINGS, SourceObjectsConfig(), "objects.sources." + source)


def square_box(i):
    """Pixels (x0, y0, x1, y1) of the square in frame i (4 px to the right per frame)."""
    x = 40.0 + 4.0 * i
    return np.array([x, 80.0, x + 60.0, 140.0], np.float32)


def square_frame(i):
    image = np.full((HEIGHT, WIDTH, 3), 90, np.uint8)
    x0, y0, x1, y1 = [int(v) for v in square_box(i)]
    image[y0:y1, x0:x1] = 255
    return image


def result(objects_stage, i, score, t, source="cam"):
    """FrameResult of frame i (the square seen with `score`, or no detection when score is None)."""
    image = square_frame(i)
    boxes = square_box(i)[None] if score is not None else np.zeros((0, 4), np.float32)
    scores = np.array([score] if score is not None else [], np.float32)
    class_ids = np.array([1] if score is not None else [], np.int32)
    normalized = boxes[:, [1, 0, 3, 2]] / np.array([HEIGHT, WIDTH, HEIGHT, WIDTH], np.float32)
    detections = Detections(normalized, scores, class_ids)
    labels = [LABELS[int(c)] for c in class_ids]
    frame = objects_stage.update(boxes, class_ids, scores, t, WIDTH, HEIGHT)
    return FrameResult(source, i, source, t, image, image, detections, boxes, labels, "int8", {}, frame)
