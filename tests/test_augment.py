"""training.data.augment: every OD API augmentation, checked on the pixels.

Geometric steps must keep each box on the white rectangle it describes; colour steps are
checked against the formula they implement (numpy and colorsys), pixel by pixel.
"""

import colorsys
import dataclasses

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from app.errors import UserError  # noqa: E402
from training.config import AUGMENTATIONS, CropOperation, RandomCropConfig, load_config  # noqa: E402
from training.data import augment  # noqa: E402

H, W = 60, 80
RECTS = [(10, 20, 30, 50), (40, 60, 56, 76)]  # white on black, rows r0..r1 x cols c0..c1
AREAS = sorted((r1 - r0) * (c1 - c0) for r0, c0, r1, c1 in RECTS)


def _scene():
    image = np.zeros((H, W, 3), np.uint8)
    for r0, c0, r1, c1 in RECTS:
        image[r0:r1, c0:c1] = 255
    boxes = np.array([[r0 / H, c0 / W, r1 / H, c1 / W] for r0, c0, r1, c1 in RECTS], np.float32)
    return image, boxes, np.array([0, 2], np.int32)


def _colour_image():
    """float32 [12, 16, 3] of varied, unclipped colours in 60..190 (and one grey pixel)."""
    rng = np.random.RandomState(0)
    image = rng.uniform(60, 190, (12, 16, 3)).astype(np.float32)
    image[0, 0] = 128.0
    return image


def _box_regions(out, out_boxes):
    """Each box as a pixel mask of `out`'s size."""
    h, w = out.shape[:2]
    for box in out_boxes:
        y0, x0, y1, x1 = np.round(np.clip(box, 0, 1) * [h, w, h, w]).astype(int)
        region = np.zeros((h, w), bool)
        region[y0:y1, x0:x1] = True
        yield region


def _assert_whole_rects_under_boxes(out, out_boxes):
    """Every box covers one whole white rectangle, and nothing white is left without a box."""
    white = out[..., 0] == 255
    covered = np.zeros_like(white)
    for region in _box_regions(out, out_boxes):
        assert white[region].all() and region.sum() in AREAS
        covered |= region
    assert (white & ~covered).sum() == 0


@pytest.mark.parametrize("step", [augment.random_vertical_flip, augment.random_rotation90,
                                  augment.random_horizontal_flip])
def test_flips_and_rotation_move_boxes_with_pixels(step):
    image, boxes, _ = _scene()
    changed = 0
    for s in range(10):
        out, out_boxes = [t.numpy() for t in step(tf.constant(image), tf.constant(boxes),
                                                 tf.constant([s, 11]))]
        changed += int(out.shape != image.shape or not np.array_equal(out, image))
        _assert_whole_rects_under_boxes(out, out_boxes)
    assert 0 < changed < 10  # both outcomes over 10 seeds


def test_rotation90_turns_counter_clockwise():
    image, boxes, _ = _scene()
    for s in range(10):
        out, out_boxes = [t.numpy() for t in augment.random_rotation90(
            tf.constant(image), tf.constant(boxes), tf.constant([s, 2]))]
        if out.shape[:2] == (W, H):
            # The image's top-right corner is now its top-left: pixel (0, W-1) -> (0, 0).
            np.testing.assert_array_equal(out[0, :], image[:, W - 1])
            np.testing.assert_allclose(out_boxes[0], [1 - 50 / W, 10 / H, 1 - 20 / W, 30 / H],
                                       atol=1e-6)
            return
    pytest.fail("no seed turned the image")


def _crop(seed, crop):
    image, boxes, classes = _scene()
    return [t.numpy() for t in augment.random_crop_image(
        tf.constant(image), tf.constant(boxes), tf.constant(classes), tf.constant([seed, 3]), crop)]


def test_crop_random_coef_is_the_chance_of_the_uncropped_image():
    image, boxes, _ = _scene()
    always = RandomCropConfig(min_area=0.3, max_area=0.6, random_coef=1.0)
    for s in range(5):
        out, out_boxes, _ = _crop(s, always)
        np.testing.assert_array_equal(out, image)
        np.testing.assert_array_equal(out_boxes, boxes)
    half = dataclasses.replace(always, random_coef=0.5)
    kept = sum(_crop(s, half)[0].shape == image.shape for s in range(20))
    assert 3 <= kept <= 17


def test_crop_without_clip_boxes_keeps_boxes_whole_beyond_the_crop():
    clipped = RandomCropConfig(min_area=0.3, max_area=0.5, min_aspect_ratio=0.5, max_aspect_ratio=2.0)
    loose = dataclasses.replace(clipped, clip_boxes=False)
    outside = 0
    for s in range(20):
        out, boxes_clipped, _ = _crop(s, clipped)
        same, boxes_loose, _ = _crop(s, loose)
        np.testing.assert_array_equal(out, same)  # the same window for the same seed
        np.testing.assert_allclose(np.clip(boxes_loose, 0, 1), boxes_clipped, atol=1e-6)
        outside += int(((boxes_loose < -1e-6) | (boxes_loose > 1 + 1e-6)).any())
        h, w = out.shape[:2]
        for box in boxes_loose:  # the unclipped box still spans the whole rectangle
            full = (box[2] - box[0]) * h * (box[3] - box[1]) * w
            assert min(abs(full - a) for a in AREAS) < 1e-3 * H * W
    assert outside > 0


def test_ssd_random_crop_draws_one_operation_per_image():
    image, boxes, classes = _scene()
    whole = CropOperation(min_area=1.0, max_area=1.0, random_coef=0.0)
    quarter = CropOperation(min_area=0.25, max_area=0.25, min_aspect_ratio=0.75,
                            max_aspect_ratio=1.33, random_coef=0.0)
    sizes = set()
    for s in range(16):
        out, out_boxes, out_classes = [t.numpy() for t in augment.ssd_random_crop(
            tf.constant(image), tf.constant(boxes), tf.constant(classes), tf.constant([s, 9]),
            [whole, quarter])]
        area = out.shape[0] * out.shape[1]
        assert area == H * W or abs(area - 0.25 * H * W) < 0.05 * H * W
        sizes.add(area == H * W)
        assert len(out_boxes) == len(out_classes)
        white = out[..., 0] == 255
        for region in _box_regions(out, out_boxes):
            assert white[region].all()
    assert sizes == {True, False}  # both operations were drawn


def _run_colour(step, seed, *args):
    return step(tf.constant(_colour_image()), tf.constant([seed, 4]), *args).numpy()


def test_brightness_adds_one_delta_to_every_pixel():
    deltas = []
    for s in range(8):
        diff = _run_colour(augment.random_adjust_brightness, s, 0.2) - _colour_image()
        assert np.ptp(diff) < 1e-3
        deltas.append(float(diff.mean()))
    assert max(abs(d) for d in deltas) <= 0.2 * 255 + 1e-3
    assert min(deltas) < 0 < max(deltas)


def test_contrast_scales_each_channel_around_its_mean():
    image = _colour_image()
    mean = image.mean(axis=(0, 1))
    for s in range(4):
        out = _run_colour(augment.random_adjust_contrast, s, 0.8, 1.25)
        factor = (out[3, 5, 0] - mean[0]) / (image[3, 5, 0] - mean[0])
        assert 0.8 - 1e-4 <= factor <= 1.25 + 1e-4
        np.testing.assert_allclose(out, (image - mean) * factor + mean, atol=2e-3)


def _hsv(image):
    return np.array([colorsys.rgb_to_hsv(*(p / 255.0)) for p in image.reshape(-1, 3)])


def test_hue_turns_every_pixel_by_one_delta():
    image = _colour_image()
    before = _hsv(image)
    for s in range(4):
        after = _hsv(_run_colour(augment.random_adjust_hue, s, 0.05))
        turn = (after[1:, 0] - before[1:, 0] + 0.5) % 1.0 - 0.5  # skip the grey pixel (no hue)
        assert np.ptp(turn) < 1e-3 and abs(turn.mean()) <= 0.05 + 1e-4
        np.testing.assert_allclose(after[:, 1:], before[:, 1:], atol=2e-3)


def test_saturation_scales_every_pixel_by_one_factor():
    image = _colour_image()
    before = _hsv(image)
    for s in range(4):
        out = _run_colour(augment.random_adjust_saturation, s, 0.8, 1.25)
        after = _hsv(out)
        ratio = after[1:, 1] / before[1:, 1]
        expected_sat = np.minimum(before[1:, 1] * ratio.mean(), 1.0)
        assert 0.8 - 1e-3 <= ratio.mean() <= 1.25 + 1e-3
        np.testing.assert_allclose(after[1:, 1], expected_sat, atol=2e-3)
        np.testing.assert_allclose(after[:, 2], before[:, 2], atol=2e-3)  # value unchanged
        np.testing.assert_allclose(out[0, 0], 128.0, atol=1e-3)  # grey stays grey


@pytest.mark.parametrize("ordering, names", [
    (0, ("brightness", "saturation", "hue", "contrast")),
    (1, ("brightness", "contrast", "saturation", "hue")),
])
def test_distort_color_is_the_four_steps_in_its_order(ordering, names):
    seed = tf.constant([5, 4])
    seeds = tf.unstack(tf.random.experimental.stateless_split(seed, 4))
    steps = {"brightness": lambda x: augment.random_adjust_brightness(x, seeds[0], 32 / 255),
             "saturation": lambda x: augment.random_adjust_saturation(x, seeds[1], 0.5, 1.5),
             "hue": lambda x: augment.random_adjust_hue(x, seeds[2], 0.2),
             "contrast": lambda x: augment.random_adjust_contrast(x, seeds[3], 0.5, 1.5)}
    expected = tf.constant(_colour_image())
    for name in names:
        expected = steps[name](expected)
    out = augment.random_distort_color(tf.constant(_colour_image()), seed, ordering).numpy()
    np.testing.assert_allclose(out, expected.numpy(), atol=1e-4)
    assert out.min() >= 0.0 and out.max() <= 255.0
    assert np.abs(out - _colour_image()).max() > 5.0  # it did change the colours


def test_distort_color_orderings_differ_and_others_are_refused():
    image, seed = tf.constant(_colour_image()), tf.constant([5, 4])
    zero = augment.random_distort_color(image, seed, 0).numpy()
    one = augment.random_distort_color(image, seed, 1).numpy()
    # The same four draws nearly commute on unclipped colours, but not exactly: the order is
    # real (the test above holds each ordering to 1e-4).
    assert np.abs(zero - one).max() > 0.01
    with pytest.raises(ValueError, match="color_ordering"):
        augment.random_distort_color(image, seed, 2)


def test_rgb_to_gray_uses_the_luma_weights():
    image = _colour_image()
    gray = _run_colour(augment.random_rgb_to_gray, 0, 1.0)
    luma = image @ np.array(augment.GRAY_WEIGHTS, np.float32)
    for c in range(3):
        np.testing.assert_allclose(gray[..., c], luma, atol=1e-3)
    np.testing.assert_array_equal(_run_colour(augment.random_rgb_to_gray, 0, 0.0), image)
    grey_count = sum(np.ptp(_run_colour(augment.random_rgb_to_gray, s, 0.5), axis=-1).max() < 1e-3
                     for s in range(12))
    assert 0 < grey_count < 12


def test_black_patches_are_squares_of_the_given_ratio():
    white = tf.fill([H, W, 3], 255.0)
    corners = set()
    for s in range(6):
        out = augment.random_black_patches(white, tf.constant([s, 1]), 1, 1.0, 0.1).numpy()
        rows, cols = np.nonzero(out[..., 0] == 0)
        side = int(0.1 * min(H, W))
        assert len(rows) == side * side and (out[rows, cols] == 0).all()
        assert (np.ptp(rows), np.ptp(cols)) == (side - 1, side - 1)  # one side x side square
        corners.add((rows.min(), cols.min()))
        assert (out == 0).sum() + (out == 255).sum() == out.size
    assert len(corners) > 1
    untouched = augment.random_black_patches(white, tf.constant([0, 1]), 5, 0.0, 0.1).numpy()
    assert (untouched == 255).all()
    several = augment.random_black_patches(white, tf.constant([3, 1]), 10, 0.5, 0.1).numpy()
    assert 0 < (several[..., 0] == 0).sum() <= 10 * 36


def with_every_augmentation(train, enabled):
    """`train` (a TrainConfig) with each step of training.config.AUGMENTATIONS on or off."""
    for _, key in AUGMENTATIONS:
        if key.endswith(".enabled"):
            name = key[:-len(".enabled")]
            train = dataclasses.replace(train, **{name: dataclasses.replace(
                getattr(train, name), enabled=enabled)})
        else:
            train = dataclasses.replace(train, **{key: enabled})
    return train


def test_apply_runs_every_step_and_keeps_boxes_and_classes_paired():
    image, boxes, classes = _scene()
    args = [tf.constant(image), tf.constant(boxes), tf.constant(classes)]
    everything = with_every_augmentation(load_config().train, True)
    for s in range(4):
        out, out_boxes, out_classes = [
            t.numpy() for t in augment.apply(*args, tf.constant([s, 0]), everything)]
        assert out.dtype == np.float32 and out.min() >= 0.0 and out.max() <= 255.0
        assert len(out_boxes) == len(out_classes) and set(out_classes) <= {0, 2}
        assert (out_boxes >= 0.0).all() and (out_boxes <= 1.0).all()
    nothing = with_every_augmentation(load_config().train, False)
    out, out_boxes, _ = [t.numpy() for t in augment.apply(*args, tf.constant([1, 0]), nothing)]
    np.testing.assert_array_equal(out, image.astype(np.float32))
    np.testing.assert_array_equal(out_boxes, boxes)


@pytest.mark.parametrize("key, change, expected", [
    ("distort_color", {"color_ordering": 2}, "train.distort_color.color_ordering: expected 0 or 1"),
    ("rgb_to_gray", {"probability": 1.5}, "train.rgb_to_gray.probability: expected a probability"),
    ("adjust_contrast", {"min_delta": 2.0}, "train.adjust_contrast.min_delta"),
    ("ssd_random_crop", {"operations": []}, "train.ssd_random_crop.operations"),
    ("ssd_random_crop", {"operations": [CropOperation(), CropOperation(max_area=0.0)]},
     r"train.ssd_random_crop.operations\[1\].min_area: expected 0 < min_area <= max_area"),
    ("random_crop", {"min_aspect_ratio": 4.0}, "train.random_crop.min_aspect_ratio"),
])
def test_check_config_names_the_bad_key(key, change, expected):
    train = load_config().train
    train = dataclasses.replace(train, **{key: dataclasses.replace(getattr(train, key), **change)})
    with pytest.raises(UserError, match=expected):
        augment.check_config(train)
    augment.check_config(load_config().train)  # the defaults pass
