"""The training input pipeline: decoded images -> augment -> resize -> normalize -> targets -> batch.

Order, as the OD API: random_horizontal_flip and random_crop_image on the
full-size image, then the fixed_shape_resizer (stretch, bilinear), then the one
shared `app.preprocess.normalize`, then per-anchor targets. Targets have a fixed
shape per image ([N anchors, ...]), so ground-truth boxes need no padding before
batching; at most `max_boxes` boxes per image are kept (max_number_of_boxes).

Randomness is stateless, seeded per element from one pipeline seed, so a
parallel map stays reproducible.
"""

import tensorflow as tf

from app import preprocess
from training import targets as ssd_targets

# Keep decoded images in memory when they take at most this many bytes.
CACHE_BUDGET_BYTES = 4 * 1024 ** 3


def random_horizontal_flip(image, boxes, seed):
    """Mirrors image and boxes left-right with probability 0.5.

    Args:
      image: uint8 [H, W, 3].
      boxes: float32 [K, 4] normalized (ymin, xmin, ymax, xmax).
      seed: int32/int64 [2] stateless seed.

    Returns:
      (image, boxes), same shapes.
    """
    flip = tf.random.stateless_uniform([], seed) < 0.5
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    flipped = tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)
    return (tf.cond(flip, lambda: tf.image.flip_left_right(image), lambda: image),
            tf.where(flip, flipped, boxes))


def _intersection_over_box_area(boxes, window):
    """Fraction of each box [K, 4] inside window [4] (both normalized yxyx): float32 [K]."""
    top = tf.maximum(boxes[:, 0], window[0])
    left = tf.maximum(boxes[:, 1], window[1])
    bottom = tf.minimum(boxes[:, 2], window[2])
    right = tf.minimum(boxes[:, 3], window[3])
    inter = tf.maximum(bottom - top, 0.0) * tf.maximum(right - left, 0.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return tf.math.divide_no_nan(inter, area)


def random_crop_image(image, boxes, classes, seed, crop_cfg):
    """OD API random_crop_image: a random window, boxes moved into it, clipped, pruned.

    Args:
      image: uint8 [H, W, 3].
      boxes: float32 [K, 4] normalized (ymin, xmin, ymax, xmax).
      classes: int32 [K].
      seed: [2] stateless seed.
      crop_cfg: training.config.RandomCropConfig-like (min_object_covered,
        min/max_aspect_ratio, min/max_area, overlap_thresh).

    Returns:
      (image uint8 [h, w, 3], boxes float32 [K', 4] normalized to the crop,
      classes int32 [K']): boxes with no overlap, or an overlap fraction below
      overlap_thresh, are dropped.
    """
    begin, size, window = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=boxes[None], seed=seed,
        min_object_covered=crop_cfg.min_object_covered,
        aspect_ratio_range=(crop_cfg.min_aspect_ratio, crop_cfg.max_aspect_ratio),
        area_range=(crop_cfg.min_area, crop_cfg.max_area), max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    window = window[0, 0]
    overlap = _intersection_over_box_area(boxes, window)
    keep = tf.logical_and(overlap > 0.0, overlap >= crop_cfg.overlap_thresh)
    offset = tf.stack([window[0], window[1], window[0], window[1]])
    scale = tf.stack([window[2] - window[0], window[3] - window[1]] * 2)
    moved = tf.clip_by_value((boxes - offset) / scale, 0.0, 1.0)
    return (tf.slice(image, begin, size), tf.boolean_mask(moved, keep),
            tf.boolean_mask(classes, keep))


def to_model_input(image, height, width, method="bilinear"):
    """uint8 [h, w, 3] RGB -> float32 [height, width, 3] in the model's range (stretch + normalize).

    `method` is one of app.preprocess.RESIZE_METHODS; bilinear_tf1 is TF1's resize without
    half-pixel centres, which app.preprocess.resize_bilinear_tf1 reproduces in numpy.
    """
    image = tf.cast(image, tf.float32)
    if method == "bilinear_tf1":
        resized = tf.raw_ops.ResizeBilinear(images=image[None], size=(height, width),
                                            align_corners=False, half_pixel_centers=False)[0]
    else:
        resized = tf.image.resize(image, (height, width), method="bilinear")
    return preprocess.normalize(tf.clip_by_value(resized, 0.0, 255.0))


def _augment(image, boxes, classes, seed, train_cfg):
    seeds = tf.random.experimental.stateless_split(seed, 2)
    if train_cfg.horizontal_flip:
        image, boxes = random_horizontal_flip(image, boxes, seeds[0])
    if train_cfg.random_crop.enabled:
        image, boxes, classes = random_crop_image(image, boxes, classes, seeds[1],
                                                  train_cfg.random_crop)
    return image, boxes, classes


def make_example_fn(cfg, anchors, augment):
    """One decoded example -> (model input, targets dict); see `train_dataset`."""
    model_cfg, train_cfg = cfg.model, cfg.train
    bc = model_cfg.box_coder
    scales = (bc.y_scale, bc.x_scale, bc.height_scale, bc.width_scale)
    anchors = tf.constant(anchors, tf.float32)

    def fn(example, seed):
        image, boxes, classes = example["image"], example["boxes"], example["classes"]
        if augment:
            image, boxes, classes = _augment(image, boxes, classes, seed, train_cfg)
        boxes, classes = boxes[:cfg.data.max_boxes], classes[:cfg.data.max_boxes]
        inputs = to_model_input(image, model_cfg.input_height, model_cfg.input_width, model_cfg.resize)
        targets = ssd_targets.assign_targets(
            boxes, classes, anchors, len(model_cfg.labels), train_cfg.matched_threshold,
            train_cfg.unmatched_threshold, train_cfg.force_match_for_each_row, scales)
        return inputs, targets
    return fn


def fits_in_cache(examples, budget=CACHE_BUDGET_BYTES):
    """True when the decoded uint8 images of `examples` (with .height, .width) fit `budget` bytes."""
    return sum(int(e.height) * int(e.width) * 3 for e in examples) <= budget


def train_dataset(decoded, cfg, anchors, batch_size, cache=False, augment=True, seed=0):
    """The batched, repeated training dataset.

    Args:
      decoded: tf.data.Dataset of {"image": uint8 [H, W, 3] RGB, "boxes": float32
        [K, 4] normalized yxyx, "classes": int32 [K] 0-based} (training.data.dataset).
      cfg: training.config.Config (model, train, data sections).
      anchors: float32 [N, 4] (yc, xc, h, w) from app.anchors.anchors_from_config.
      batch_size: global batch size (tf.distribute splits it across replicas).
      cache: keep the decoded images in memory (see `fits_in_cache`).
      augment: apply the configured flip and crop.
      seed: pipeline seed (shuffle order and augmentation).

    Returns:
      tf.data.Dataset of (images float32 [B, H, W, 3] in the model range,
      targets dict of cls_targets [B, N, C], cls_weights [B, N],
      box_targets [B, N, 4], box_weights [B, N]), infinite.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1, got {}".format(batch_size))
    ds = decoded.cache() if cache else decoded
    ds = ds.shuffle(max(1, cfg.data.shuffle_buffer), seed=seed, reshuffle_each_iteration=True)
    ds = ds.repeat()
    seeds = tf.data.Dataset.random(seed=seed).batch(2)
    ds = tf.data.Dataset.zip((ds, seeds))
    ds = ds.map(make_example_fn(cfg, anchors, augment), num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=False)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.prefetch(tf.data.AUTOTUNE)
