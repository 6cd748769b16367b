"""The OD API's data augmentations (object_detection/core/preprocessor.py), one per function.

Geometric steps take and return [H, W, 3] images of any dtype with float32 [K, 4] normalized
(ymin, xmin, ymax, xmax) boxes, which they keep on the pixels they describe. Colour steps take
and return float32 [H, W, 3] images in [0, 255], as the OD API's do: each works on the image
divided by 255 and clips the result back to [0, 255]. Boxes do not change in colour steps.

Randomness is stateless: every function takes a [2] int seed, so a parallel tf.data map stays
reproducible. `apply` runs the configured steps in one fixed order, training.config.AUGMENTATIONS:
geometric steps first, then colour.
"""

import tensorflow as tf

from app.errors import UserError
from training.config import AUGMENTATIONS

GRAY_WEIGHTS = (0.2989, 0.5870, 0.1140)  # the OD API's luma weights for random_rgb_to_gray


def _chance(seed, probability):
    """A scalar bool that is True with `probability`."""
    return tf.random.stateless_uniform([], seed) < probability


def _flip_with_chance(image, boxes, seed, image_fn, boxes_fn, probability=0.5):
    """(image_fn(image), boxes_fn(boxes)) with `probability`, else the inputs unchanged."""
    flip = _chance(seed, probability)
    return (tf.cond(flip, lambda: image_fn(image), lambda: image),
            tf.cond(flip, lambda: boxes_fn(boxes), lambda: boxes))


def _mirror_x(boxes):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return tf.stack([ymin, 1.0 - xmax, ymax, 1.0 - xmin], axis=1)


def _mirror_y(boxes):
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return tf.stack([1.0 - ymax, xmin, 1.0 - ymin, xmax], axis=1)


def _rotate_boxes_90(boxes):
    # tf.image.rot90 turns counter-clockwise: pixel (y, x) goes to (1 - x, y).
    ymin, xmin, ymax, xmax = tf.unstack(boxes, axis=1)
    return tf.stack([1.0 - xmax, ymin, 1.0 - xmin, ymax], axis=1)


def random_horizontal_flip(image, boxes, seed):
    """Mirrors image and boxes left-right with probability 0.5.

    Args:
      image: [H, W, 3], any dtype (uint8 or float32).
      boxes: float32 [K, 4] normalized (ymin, xmin, ymax, xmax).
      seed: int32/int64 [2] stateless seed.

    Returns:
      (image, boxes), same shapes.
    """
    return _flip_with_chance(image, boxes, seed, tf.image.flip_left_right, _mirror_x)


def random_vertical_flip(image, boxes, seed):
    """Mirrors image and boxes top-bottom with probability 0.5 (arguments as the horizontal flip)."""
    return _flip_with_chance(image, boxes, seed, tf.image.flip_up_down, _mirror_y)


def random_rotation90(image, boxes, seed):
    """Turns image and boxes 90 degrees counter-clockwise with probability 0.5.

    Args:
      image: [H, W, 3], any dtype.
      boxes: float32 [K, 4] normalized (ymin, xmin, ymax, xmax).
      seed: [2] stateless seed.

    Returns:
      (image [W, H, 3] when turned, else [H, W, 3]; boxes [K, 4] normalized to that image).
    """
    return _flip_with_chance(image, boxes, seed, tf.image.rot90, _rotate_boxes_90)


def _intersection_over_box_area(boxes, window):
    """Fraction of each box [K, 4] inside window [4] (both normalized yxyx): float32 [K]."""
    top = tf.maximum(boxes[:, 0], window[0])
    left = tf.maximum(boxes[:, 1], window[1])
    bottom = tf.minimum(boxes[:, 2], window[2])
    right = tf.minimum(boxes[:, 3], window[3])
    inter = tf.maximum(bottom - top, 0.0) * tf.maximum(right - left, 0.0)
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return tf.math.divide_no_nan(inter, area)


def _crop_always(image, boxes, classes, seed, crop):
    """One random window as sample_distorted_bounding_box draws it; boxes moved, pruned, clipped."""
    begin, size, window = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.clip_by_value(boxes, 0.0, 1.0)[None], seed=seed,
        min_object_covered=crop.min_object_covered,
        aspect_ratio_range=(crop.min_aspect_ratio, crop.max_aspect_ratio),
        area_range=(crop.min_area, crop.max_area), max_attempts=100,
        use_image_if_no_bounding_boxes=True)
    window = window[0, 0]
    overlap = _intersection_over_box_area(boxes, window)
    keep = tf.logical_and(overlap > 0.0, overlap >= crop.overlap_thresh)
    offset = tf.stack([window[0], window[1], window[0], window[1]])
    scale = tf.stack([window[2] - window[0], window[3] - window[1]] * 2)
    moved = (boxes - offset) / scale
    if crop.clip_boxes:
        moved = tf.clip_by_value(moved, 0.0, 1.0)
    return (tf.slice(image, begin, size), tf.boolean_mask(moved, keep),
            tf.boolean_mask(classes, keep))


def random_crop_image(image, boxes, classes, seed, crop):
    """OD API random_crop_image: a random window, boxes moved into it, pruned, maybe clipped.

    Args:
      image: [H, W, 3], any dtype.
      boxes: float32 [K, 4] normalized (ymin, xmin, ymax, xmax).
      classes: int32 [K].
      seed: [2] stateless seed.
      crop: training.config.RandomCropConfig or CropOperation (min_object_covered,
        min/max_aspect_ratio, min/max_area, overlap_thresh, clip_boxes, random_coef).

    Returns:
      (image [h, w, 3] of the same dtype, boxes float32 [K', 4] normalized to the crop,
      classes int32 [K']): boxes with no overlap, or an overlap fraction below
      overlap_thresh, are dropped. With chance random_coef the inputs come back uncropped.
    """
    crop_seed, skip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    if crop.random_coef <= 0.0:
        return _crop_always(image, boxes, classes, crop_seed, crop)
    # The OD API crops when a uniform draw exceeds random_coef.
    skip = _chance(skip_seed, crop.random_coef)
    return tf.cond(skip, lambda: (image, boxes, classes),
                   lambda: _crop_always(image, boxes, classes, crop_seed, crop))


def ssd_random_crop(image, boxes, classes, seed, operations):
    """OD API ssd_random_crop: one of `operations`, drawn uniformly, as random_crop_image.

    Args:
      image, boxes, classes, seed: as `random_crop_image`.
      operations: non-empty list of training.config.CropOperation.

    Returns:
      As `random_crop_image`.
    """
    pick_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    index = tf.random.stateless_uniform([], pick_seed, 0, len(operations), dtype=tf.int32)
    branches = [lambda op=op: random_crop_image(image, boxes, classes, crop_seed, op)
                for op in operations]
    return tf.switch_case(index, branches)


def _on_unit_range(image, adjust):
    """adjust(image / 255) * 255, clipped to [0, 255]: how every OD API colour step works."""
    return tf.clip_by_value(adjust(image / 255.0) * 255.0, 0.0, 255.0)


def random_adjust_brightness(image, seed, max_delta=0.2):
    """Adds one delta, uniform in [-max_delta, max_delta] (fraction of 255), to every pixel.

    Args:
      image: float32 [H, W, 3] in [0, 255].
      seed: [2] stateless seed.
      max_delta: largest change, a fraction of the full range.

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    delta = tf.random.stateless_uniform([], seed, -max_delta, max_delta)
    return _on_unit_range(image, lambda x: tf.image.adjust_brightness(x, delta))


def random_adjust_contrast(image, seed, min_delta=0.8, max_delta=1.25):
    """Scales each channel's distance from its mean by one factor in [min_delta, max_delta].

    Args:
      image: float32 [H, W, 3] in [0, 255].
      seed: [2] stateless seed.
      min_delta, max_delta: range of the contrast factor.

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    factor = tf.random.stateless_uniform([], seed, min_delta, max_delta)
    return _on_unit_range(image, lambda x: tf.image.adjust_contrast(x, factor))


def random_adjust_hue(image, seed, max_delta=0.02):
    """Turns every pixel's hue by one delta in [-max_delta, max_delta] (fraction of the circle).

    Args:
      image: float32 [H, W, 3] RGB in [0, 255].
      seed: [2] stateless seed.
      max_delta: largest turn, at most 0.5.

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    delta = tf.random.stateless_uniform([], seed, -max_delta, max_delta)
    return _on_unit_range(image, lambda x: tf.image.adjust_hue(x, delta))


def random_adjust_saturation(image, seed, min_delta=0.8, max_delta=1.25):
    """Multiplies every pixel's HSV saturation by one factor in [min_delta, max_delta].

    Args:
      image: float32 [H, W, 3] RGB in [0, 255].
      seed: [2] stateless seed.
      min_delta, max_delta: range of the saturation factor.

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    factor = tf.random.stateless_uniform([], seed, min_delta, max_delta)
    return _on_unit_range(image, lambda x: tf.image.adjust_saturation(x, factor))


def random_distort_color(image, seed, color_ordering=0):
    """OD API random_distort_color: brightness, saturation, hue and contrast at fixed strengths.

    Args:
      image: float32 [H, W, 3] RGB in [0, 255].
      seed: [2] stateless seed; its four splits drive brightness, saturation, hue, contrast.
      color_ordering: 0 = brightness, saturation, hue, contrast; 1 = brightness, contrast,
        saturation, hue.

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    if color_ordering not in (0, 1):
        raise ValueError("color_ordering must be 0 or 1, got {}".format(color_ordering))
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    steps = {"brightness": lambda x: random_adjust_brightness(x, seeds[0], 32.0 / 255.0),
             "saturation": lambda x: random_adjust_saturation(x, seeds[1], 0.5, 1.5),
             "hue": lambda x: random_adjust_hue(x, seeds[2], 0.2),
             "contrast": lambda x: random_adjust_contrast(x, seeds[3], 0.5, 1.5)}
    order = (("brightness", "saturation", "hue", "contrast") if color_ordering == 0 else
             ("brightness", "contrast", "saturation", "hue"))
    for name in order:
        image = steps[name](image)
    return image


def random_rgb_to_gray(image, seed, probability=0.1):
    """With `probability`, every channel becomes the luma 0.2989 R + 0.587 G + 0.114 B.

    Args:
      image: float32 [H, W, 3] RGB in [0, 255].
      seed: [2] stateless seed.
      probability: chance of the grey image.

    Returns:
      float32 [H, W, 3] in [0, 255].
    """
    gray = tf.reduce_sum(image * tf.constant(GRAY_WEIGHTS), axis=-1, keepdims=True)
    return tf.cond(_chance(seed, probability), lambda: tf.tile(gray, [1, 1, 3]), lambda: image)


def _black_patch(image, seed, size_to_image_ratio):
    """`image` with one black square of side int(ratio * min(H, W)), placed uniformly."""
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    size = tf.cast(tf.minimum(height, width) * size_to_image_ratio, tf.int32)
    corner = tf.random.stateless_uniform([2], seed, 0.0, 1.0 - size_to_image_ratio)
    top, left = tf.cast(corner[0] * height, tf.int32), tf.cast(corner[1] * width, tf.int32)
    patch = tf.image.pad_to_bounding_box(tf.ones([size, size, 1], image.dtype), top, left,
                                         shape[0], shape[1])
    return image * (1 - patch)


def random_black_patches(image, seed, max_black_patches=10, probability=0.5,
                         size_to_image_ratio=0.1):
    """OD API random_black_patches: up to `max_black_patches` black squares, each with `probability`.

    Args:
      image: float32 [H, W, 3].
      seed: [2] stateless seed.
      max_black_patches: how many squares may be drawn.
      probability: chance of each one.
      size_to_image_ratio: square side as a fraction of min(H, W).

    Returns:
      float32 [H, W, 3]; boxes are unchanged (objects may be partly covered).
    """
    seeds = tf.random.experimental.stateless_split(seed, 2 * max_black_patches)
    for i in range(max_black_patches):
        image = tf.cond(_chance(seeds[2 * i], probability),
                        lambda s=seeds[2 * i + 1]: _black_patch(image, s, size_to_image_ratio),
                        lambda: image)
    return image


def _boxes_step(fn):
    """A (image, boxes, seed) step as a STEPS entry."""
    return lambda image, boxes, classes, seed, cfg: fn(image, boxes, seed) + (classes,)


def _colour_step(fn, *params):
    """An (image, seed, *params) step as a STEPS entry; params are the attribute paths of cfg."""
    def step(image, boxes, classes, seed, cfg):
        return fn(image, seed, *[_get(cfg, p) for p in params]), boxes, classes
    return step


# OD API step name -> fn(image, boxes, classes, seed, train_cfg) -> (image, boxes, classes).
STEPS = {
    "random_horizontal_flip": _boxes_step(random_horizontal_flip),
    "random_vertical_flip": _boxes_step(random_vertical_flip),
    "random_rotation90": _boxes_step(random_rotation90),
    "random_crop_image": lambda i, b, c, s, cfg: random_crop_image(i, b, c, s, cfg.random_crop),
    "ssd_random_crop": lambda i, b, c, s, cfg: ssd_random_crop(
        i, b, c, s, cfg.ssd_random_crop.operations),
    "random_adjust_brightness": _colour_step(random_adjust_brightness, "adjust_brightness.max_delta"),
    "random_adjust_contrast": _colour_step(
        random_adjust_contrast, "adjust_contrast.min_delta", "adjust_contrast.max_delta"),
    "random_adjust_hue": _colour_step(random_adjust_hue, "adjust_hue.max_delta"),
    "random_adjust_saturation": _colour_step(
        random_adjust_saturation, "adjust_saturation.min_delta", "adjust_saturation.max_delta"),
    "random_distort_color": _colour_step(random_distort_color, "distort_color.color_ordering"),
    "random_rgb_to_gray": _colour_step(random_rgb_to_gray, "rgb_to_gray.probability"),
    "random_black_patches": _colour_step(
        random_black_patches, "black_patches.max_black_patches", "black_patches.probability",
        "black_patches.size_to_image_ratio"),
}


def apply(image, boxes, classes, seed, train_cfg):
    """Every augmentation `train_cfg` enables, in the order of training.config.AUGMENTATIONS.

    Args:
      image: uint8 [H, W, 3] RGB.
      boxes: float32 [K, 4] normalized (ymin, xmin, ymax, xmax).
      classes: int32 [K].
      seed: [2] stateless seed. Step i of AUGMENTATIONS uses split i, so turning one step on
        leaves the other steps' draws as they were.
      train_cfg: training.config.TrainConfig.

    Returns:
      (image float32 [h, w, 3] in [0, 255], boxes float32 [K', 4], classes int32 [K']).
    """
    seeds = tf.random.experimental.stateless_split(seed, len(AUGMENTATIONS))
    image = tf.cast(image, tf.float32)
    for i, (step, key) in enumerate(AUGMENTATIONS):
        if _get(train_cfg, key):
            image, boxes, classes = STEPS[step](image, boxes, classes, seeds[i], train_cfg)
    return image, boxes, classes


def _check(ok, key, expected, value):
    if not ok:
        raise UserError("config: train.{}: expected {}, got {}".format(key, expected, value))


def _check_crop(crop, key):
    """A random_crop_image / ssd_random_crop operation's ranges (sample_distorted_bounding_box's)."""
    _check(0.0 < crop.min_area <= crop.max_area <= 1.0, key + ".min_area",
           "0 < min_area <= max_area <= 1 (max_area {})".format(crop.max_area), crop.min_area)
    _check(0.0 < crop.min_aspect_ratio <= crop.max_aspect_ratio, key + ".min_aspect_ratio",
           "0 < min_aspect_ratio <= max_aspect_ratio ({})".format(crop.max_aspect_ratio),
           crop.min_aspect_ratio)
    _check(0.0 <= crop.random_coef <= 1.0, key + ".random_coef", "a probability in [0, 1]",
           crop.random_coef)


def check_config(train_cfg):
    """Raises UserError for augmentation settings the steps cannot run with (before training)."""
    for key in ("rgb_to_gray.probability", "black_patches.probability"):
        value = _get(train_cfg, key)
        _check(0.0 <= value <= 1.0, key, "a probability in [0, 1]", value)
    _check_crop(train_cfg.random_crop, "random_crop")
    for i, operation in enumerate(train_cfg.ssd_random_crop.operations):
        _check_crop(operation, "ssd_random_crop.operations[{}]".format(i))
    _check(train_cfg.distort_color.color_ordering in (0, 1), "distort_color.color_ordering",
           "0 or 1", train_cfg.distort_color.color_ordering)
    for key in ("adjust_contrast", "adjust_saturation"):
        section = getattr(train_cfg, key)
        _check(0.0 <= section.min_delta <= section.max_delta, key + ".min_delta",
               "0 <= min_delta <= max_delta ({})".format(section.max_delta), section.min_delta)
    _check(0.0 <= train_cfg.adjust_hue.max_delta <= 0.5, "adjust_hue.max_delta", "0..0.5",
           train_cfg.adjust_hue.max_delta)
    _check(0.0 < train_cfg.black_patches.size_to_image_ratio < 1.0,
           "black_patches.size_to_image_ratio", "a fraction in (0, 1)",
           train_cfg.black_patches.size_to_image_ratio)
    _check(len(train_cfg.ssd_random_crop.operations) > 0, "ssd_random_crop.operations",
           "at least one operation", "[]")


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
