"""Shared by the export tests: tiny configs and synthetic eval sets built in the test (fresh clone)."""

import dataclasses

import numpy as np

from app.synthetic import render_scene
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
