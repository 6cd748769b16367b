"""Shared by the export tests: tiny configs and synthetic eval sets built in the test (fresh clone)."""

import dataclasses

import numpy as np

from app.capture.synthetic import render_scene
from training.data.records import Example, Examples


def synthetic_examples(count, height=112, width=128, seed=1, max_objects=3):
    """`count` synthetic scenes as Examples (JPEG bytes, normalized yxyx boxes, 0-based classes)."""
    import cv2
    rng = np.random.RandomState(seed)
    items = []
    for i in range(count):
        image, boxes, classes = render_scene(rng, height, width, max_objects=max_objects)
        ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        assert ok
        items.append(Example(data.tobytes(), "jpeg", height, width, boxes.astype(np.float32),
                             classes.astype(np.int32), str(i)))
    return Examples(items)


def tiny_config(cfg, size=96, depth=0.35, **export):
    """The default config shrunk to a size x size input and a thin backbone."""
    model = dataclasses.replace(cfg.model, input_height=size, input_width=size, depth_multiplier=depth)
    return dataclasses.replace(cfg, model=model, export=dataclasses.replace(cfg.export, **export))


def simple_examples(count, size=96, seed=1):
    """Easy scenes a tiny SSD learns in a few hundred steps: one large shape on a plain background.

    Classes follow app.capture.synthetic (0 circle, 1 square, 2 triangle); boxes are the exact
    normalized (ymin, xmin, ymax, xmax) extent of the drawn shape.
    """
    import cv2
    rng = np.random.RandomState(seed)
    items = []
    for i in range(count):
        image = np.empty((size, size, 3), np.uint8)
        image[:] = rng.randint(0, 256, 3)
        cls = rng.randint(3)
        s = rng.randint(size * 3 // 10, size * 6 // 10)
        y0, x0 = rng.randint(0, size - s), rng.randint(0, size - s)
        colour = tuple(int(c) for c in (255 - image[0, 0] + rng.randint(-40, 40, 3)).clip(0, 255))
        if cls == 0:
            cv2.circle(image, (x0 + s // 2, y0 + s // 2), s // 2, colour, -1)
        elif cls == 1:
            cv2.rectangle(image, (x0, y0), (x0 + s - 1, y0 + s - 1), colour, -1)
        else:
            pts = np.array([[x0 + s // 2, y0], [x0, y0 + s - 1], [x0 + s - 1, y0 + s - 1]], np.int32)
            cv2.fillPoly(image, [pts], colour)
        ys, xs = np.nonzero(np.any(image != image[0, 0] if (y0, x0) != (0, 0) else image != image[-1, -1], -1))
        box = np.array([[ys.min(), xs.min(), ys.max() + 1, xs.max() + 1]], np.float32) / size
        ok, data = cv2.imencode(".png", image)
        assert ok
        items.append(Example(data.tobytes(), "png", size, size, box, np.array([cls], np.int32), str(i)))
    return Examples(items)
