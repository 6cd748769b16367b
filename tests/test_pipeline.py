"""training.data.pipeline: flip and crop keep boxes on the pixels they describe."""

import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from app.model import anchors as app_anchors  # noqa: E402
from training.config import RandomCropConfig, load_config  # noqa: E402
from tests.test_augment import with_every_augmentation  # noqa: E402
from training.data import augment, pipeline  # noqa: E402

H, W = 60, 80
# Two white rectangles on black: rows 10..29 x cols 20..49, and rows 40..55 x cols 60..75.
RECTS = [(10, 20, 30, 50), (40, 60, 56, 76)]


def _scene():
    image = np.zeros((H, W, 3), np.uint8)
    for r0, c0, r1, c1 in RECTS:
        image[r0:r1, c0:c1] = (255, 255, 255)
    boxes = np.array([[r0 / H, c0 / W, r1 / H, c1 / W] for r0, c0, r1, c1 in RECTS], np.float32)
    return image, boxes, np.array([0, 2], np.int32)


def _pixel_box(mask):
    """Normalized yxyx extent of the True pixels of a [h, w] mask."""
    rows, cols = np.nonzero(mask)
    h, w = mask.shape
    return np.array([rows.min() / h, cols.min() / w, (rows.max() + 1) / h, (cols.max() + 1) / w])


def test_flip_moves_boxes_with_pixels():
    image, boxes, _ = _scene()
    flipped_count = 0
    for s in range(8):
        out, out_boxes = augment.random_horizontal_flip(tf.constant(image), tf.constant(boxes),
                                                         tf.constant([s, 7]))
        out, out_boxes = out.numpy(), out_boxes.numpy()
        flipped_count += int(not np.array_equal(out, image))
        for (r0, c0, r1, c1), box in zip(RECTS, out_boxes):
            region = np.zeros((H, W), bool)
            y0, x0, y1, x1 = np.round(box * [H, W, H, W]).astype(int)
            region[y0:y1, x0:x1] = True
            # Every pixel inside the box is white and the white area has the box's size.
            assert out[region].min() == 255
            assert region.sum() == (r1 - r0) * (c1 - c0)
    assert 0 < flipped_count < 8  # both outcomes happen over 8 seeds


def test_crop_keeps_boxes_on_their_pixels():
    image, boxes, classes = _scene()
    crop = RandomCropConfig(min_area=0.3, max_area=0.8, min_aspect_ratio=0.5, max_aspect_ratio=2.0)
    dropped = 0
    for s in range(20):
        out, out_boxes, out_classes = [t.numpy() for t in augment.random_crop_image(
            tf.constant(image), tf.constant(boxes), tf.constant(classes), tf.constant([s, 3]), crop)]
        h, w = out.shape[:2]
        assert h * w <= 0.8 * H * W + W
        dropped += 2 - len(out_boxes)
        white = out[..., 0] == 255
        box_pixels = 0
        assert len(out_classes) == len(out_boxes)
        for box in out_boxes:
            y0, x0, y1, x1 = np.round(box * [h, w, h, w]).astype(int)
            region = np.zeros_like(white)
            region[y0:y1, x0:x1] = True
            # The box covers white pixels only, and exactly the white extent there.
            assert white[region].all()
            np.testing.assert_allclose(_pixel_box(white & region), box, atol=1.01 / min(h, w))
            box_pixels += region.sum()
        # The rectangles do not touch, so every visible white pixel belongs to a kept box:
        # no rectangle left in the crop lost its box (overlap_thresh 0 keeps any overlap).
        assert box_pixels == white.sum()
    assert dropped > 0  # some crops cut a rectangle out entirely


def test_crop_drops_boxes_below_overlap_thresh():
    image, boxes, classes = _scene()
    crop = RandomCropConfig(min_area=0.3, max_area=0.6, overlap_thresh=0.99)
    for s in range(10):
        out, out_boxes, _ = [t.numpy() for t in augment.random_crop_image(
            tf.constant(image), tf.constant(boxes), tf.constant(classes), tf.constant([s, 5]), crop)]
        h, w = out.shape[:2]
        for box in out_boxes:
            # Only boxes (almost) wholly inside survive, so their full area is white.
            y0, x0, y1, x1 = np.round(box * [h, w, h, w]).astype(int)
            areas = [(r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in RECTS]
            assert (y1 - y0) * (x1 - x0) in areas


def _first_batch(train_cfg, batch_size):
    """(images, targets, anchors) of the scene through train_dataset at 64x64."""
    cfg = load_config()
    cfg = dataclasses.replace(cfg, train=train_cfg or cfg.train, model=dataclasses.replace(
        cfg.model, input_height=64, input_width=64))
    anchors = app_anchors.anchors_from_config(cfg.model)
    image, boxes, classes = _scene()
    decoded = tf.data.Dataset.from_tensors({"image": image, "boxes": boxes, "classes": classes})
    images, targets = next(iter(pipeline.train_dataset(decoded, cfg, anchors, batch_size)))
    assert images.shape == (batch_size, 64, 64, 3)
    assert float(tf.reduce_min(images)) >= -1.0 and float(tf.reduce_max(images)) <= 1.0
    return images, targets, anchors


def test_train_dataset_batches_targets():
    _, targets, anchors = _first_batch(None, 3)
    assert targets["cls_targets"].shape == (3, len(anchors), 3)
    # force_match_for_each_row: every surviving box has at least one positive anchor.
    assert float(tf.reduce_min(tf.reduce_sum(targets["box_weights"], axis=1))) >= 1.0


def test_train_dataset_runs_every_augmentation_in_graph_mode():
    _, targets, _ = _first_batch(with_every_augmentation(load_config().train, True), 4)
    # Some of the four crops keep a rectangle, and its anchors are positives.
    assert float(tf.reduce_sum(targets["box_weights"])) >= 1.0



def test_tf1_resize_of_training_equals_the_numpy_one_of_the_app():
    from app.model import preprocess
    image = np.random.RandomState(3).randint(0, 256, (26, 30, 3)).astype(np.uint8)
    trained = pipeline.to_model_input(image, 16, 19, "bilinear_tf1").numpy()
    np.testing.assert_allclose(trained, preprocess.image_to_float_input(
        image, 16, 19, method="bilinear_tf1")[0], atol=1e-6)
    # Half-pixel centres (the default) sample elsewhere: the two methods really differ.
    default = pipeline.to_model_input(image, 16, 19).numpy()
    assert np.abs(default - trained).max() > 0.1
