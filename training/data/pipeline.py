"""The training input pipeline: decoded images -> augment -> resize -> normalize -> targets -> batch.

Order, as the OD API: the configured augmentations (training.data.augment) on
the full-size image, then the fixed_shape_resizer (stretch, bilinear), then the
one shared `app.model.preprocess.normalize`, then per-anchor targets. Targets have a fixed
shape per image ([N anchors, ...]), so ground-truth boxes need no padding before
batching; at most `max_boxes` boxes per image are kept (max_number_of_boxes).

Randomness is stateless, seeded per element from one pipeline seed, so a
parallel map stays reproducible.
"""

import tensorflow as tf

from app.model import preprocess
from training import targets as ssd_targets
from training.data import augment as augmentation

# Keep decoded images in memory when they take at most this many bytes.
CACHE_BUDGET_BYTES = 4 * 1024 ** 3


def to_model_input(image, height, width, method="bilinear"):
    """uint8 or float32 (0..255) [h, w, 3] RGB -> float32 [height, width, 3] in the model range (stretch + normalize).

    `method` is one of app.model.preprocess.RESIZE_METHODS; bilinear_tf1 is TF1's resize without
    half-pixel centres, which app.model.preprocess.resize_bilinear_tf1 reproduces in numpy.
    """
    image = tf.cast(image, tf.float32)
    if method == "bilinear_tf1":
        resized = tf.raw_ops.ResizeBilinear(images=image[None], size=(height, width),
                                            align_corners=False, half_pixel_centers=False)[0]
    else:
        resized = tf.image.resize(image, (height, width), method="bilinear")
    return preprocess.normalize(tf.clip_by_value(resized, 0.0, 255.0))


def make_example_fn(cfg, anchors, augment):
    """One decoded example -> (model input, targets dict); see `train_dataset`."""
    model_cfg, train_cfg = cfg.model, cfg.train
    bc = model_cfg.box_coder
    scales = (bc.y_scale, bc.x_scale, bc.height_scale, bc.width_scale)
    anchors = tf.constant(anchors, tf.float32)

    def fn(example, seed):
        image, boxes, classes = example["image"], example["boxes"], example["classes"]
        if augment:
            image, boxes, classes = augmentation.apply(image, boxes, classes, seed, train_cfg)
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
      anchors: float32 [N, 4] (yc, xc, h, w) from app.model.anchors.anchors_from_config.
      batch_size: global batch size (tf.distribute splits it across replicas).
      cache: keep the decoded images in memory (see `fits_in_cache`).
      augment: apply the configured augmentations (training.data.augment).
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
