"""app.model.anchors against anchors worked out by hand (OD API ssd_anchor_generator semantics)."""

import math
import types

import numpy as np
import pytest

from app.model import anchors

R2 = math.sqrt(2.0)


def test_feature_map_shapes_seed_514x614_uses_ceil_division():
    assert anchors.feature_map_shapes(514, 614) == [
        (33, 39), (17, 20), (9, 10), (5, 5), (3, 3), (2, 2)]


def test_feature_map_shapes_small_and_exact():
    assert anchors.feature_map_shapes(64, 64, num_layers=2) == [(4, 4), (2, 2)]
    assert anchors.feature_map_shapes(300, 300) == [
        (19, 19), (10, 10), (5, 5), (3, 3), (2, 2), (1, 1)]


@pytest.mark.parametrize("bad", [dict(input_height=0, input_width=64),
                                 dict(input_height=64, input_width=64, num_layers=0),
                                 dict(input_height=64.5, input_width=64)])
def test_feature_map_shapes_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="must be an integer"):
        anchors.feature_map_shapes(**bad)


def test_seed_anchor_count_is_6669():
    a = anchors.ssd_anchors(514, 614)
    assert a.shape == (3 * 33 * 39 + 6 * (17 * 20 + 9 * 10 + 5 * 5 + 3 * 3 + 2 * 2), 4)
    assert a.shape == (6669, 4)
    assert a.dtype == np.float32
    assert anchors.anchors_per_location(6, anchors.DEFAULT_ASPECT_RATIOS) == [3, 6, 6, 6, 6, 6]


def test_anchors_per_location_options():
    assert anchors.anchors_per_location(3, (1.0, 2.0), 0.0, False) == [2, 2, 2]
    assert anchors.anchors_per_location(2, (1.0, 2.0), 1.0, True) == [3, 3]


def test_hand_computed_64x64_two_layers():
    # Scales: s0 = 0.2, s1 = 0.95, then 1.0. Grids 4x4 (centres 1/8, 3/8, 5/8, 7/8)
    # and 2x2 (centres 1/4, 3/4).
    a = anchors.ssd_anchors(64, 64, num_layers=2, aspect_ratios=(1.0, 2.0, 0.5))
    assert a.shape == (4 * 4 * 3 + 2 * 2 * 4, 4)
    # Layer 0 (reduced): (0.1, ar 1), (0.2, ar 2), (0.2, ar 0.5); h = s/sqrt(ar), w = s*sqrt(ar).
    kinds0 = [(0.1, 0.1), (0.2 / R2, 0.2 * R2), (0.2 * R2, 0.2 / R2)]
    first_row = [(0.125, xc, h, w) for xc in (0.125, 0.375, 0.625, 0.875) for h, w in kinds0]
    np.testing.assert_allclose(a[:12], first_row, atol=1e-6)
    # Row 1, column 0, kind 0 comes right after the first row.
    np.testing.assert_allclose(a[12], [0.375, 0.125, 0.1, 0.1], atol=1e-6)
    np.testing.assert_allclose(a[47], [0.875, 0.875, 0.2 * R2, 0.2 / R2], atol=1e-6)
    # Layer 1: (0.95, 1), (0.95, 2), (0.95, 0.5), (sqrt(0.95 * 1.0), 1).
    si = math.sqrt(0.95)
    kinds1 = [(0.95, 0.95), (0.95 / R2, 0.95 * R2), (0.95 * R2, 0.95 / R2), (si, si)]
    layer1 = [(yc, xc, h, w) for yc in (0.25, 0.75) for xc in (0.25, 0.75) for h, w in kinds1]
    np.testing.assert_allclose(a[48:], layer1, atol=1e-6)
    # The same numbers written out, so the test does not only repeat the formula.
    np.testing.assert_allclose(a[49], [0.25, 0.25, 0.6717514, 1.3435029], atol=1e-6)
    np.testing.assert_allclose(a[63], [0.75, 0.75, 0.9746794, 0.9746794], atol=1e-6)


def test_no_reduction_and_no_interpolation():
    a = anchors.ssd_anchors(32, 32, num_layers=2, min_scale=0.3, max_scale=0.6,
                            aspect_ratios=(1.0,), interpolated_scale_aspect_ratio=0.0,
                            reduce_boxes_in_lowest_layer=False)
    # Grids 2x2 and 1x1, one box each: scale 0.3 then 0.6.
    np.testing.assert_allclose(a, [[0.25, 0.25, 0.3, 0.3], [0.25, 0.75, 0.3, 0.3],
                                   [0.75, 0.25, 0.3, 0.3], [0.75, 0.75, 0.3, 0.3],
                                   [0.5, 0.5, 0.6, 0.6]], atol=1e-6)


@pytest.mark.parametrize("height,width", [(192, 224), (514, 614), (300, 200)])
def test_non_square_input_anchors_are_square_in_pixels(height, width):
    a = anchors.ssd_anchors(height, width).astype(np.float64)
    h_px, w_px = a[:, 2] * height, a[:, 3] * width
    ratio = w_px / h_px
    # Every anchor's pixel aspect ratio is one of the configured ones (0.3333 -> 1/3 within 1e-4).
    allowed = np.array([1.0, 2.0, 0.5, 3.0, 0.3333])
    assert np.abs(ratio[:, None] - allowed[None, :]).min(axis=1).max() < 1e-4
    # The first anchor (scale 0.1, ratio 1) is 0.1 of the shorter side, square in pixels.
    short = min(height, width)
    np.testing.assert_allclose([h_px[0], w_px[0]], [0.1 * short, 0.1 * short], rtol=1e-5)


def test_192x224_first_layer_numbers():
    a = anchors.ssd_anchors(192, 224)
    # Grid 12x14; base width 192/224. First anchor: centre (1/24, 1/28), size (0.1, 0.1*6/7).
    np.testing.assert_allclose(a[0], [1 / 24, 1 / 28, 0.1, 0.1 * 192 / 224], atol=1e-6)
    assert a.shape == (3 * 12 * 14 + 6 * (6 * 7 + 3 * 4 + 2 * 2 + 1 + 1), 4)


def test_anchors_from_config_matches_ssd_anchors():
    cfg = types.SimpleNamespace(
        input_height=514, input_width=614,
        anchors=types.SimpleNamespace(
            num_layers=6, min_scale=0.2, max_scale=0.95, aspect_ratios=[1.0, 2.0, 0.5, 3.0, 0.3333],
            interpolated_scale_aspect_ratio=1.0, reduce_boxes_in_lowest_layer=True,
            base_anchor_height=1.0, base_anchor_width=1.0))
    np.testing.assert_array_equal(anchors.anchors_from_config(cfg), anchors.ssd_anchors(514, 614))


def test_anchors_from_training_model_config():
    from training.config import ModelConfig
    cfg = ModelConfig()
    a = anchors.anchors_from_config(cfg)
    grids = anchors.feature_map_shapes(cfg.input_height, cfg.input_width, cfg.anchors.num_layers)
    per = anchors.anchors_per_location(cfg.anchors.num_layers, cfg.anchors.aspect_ratios,
                                       cfg.anchors.interpolated_scale_aspect_ratio,
                                       cfg.anchors.reduce_boxes_in_lowest_layer)
    assert len(a) == sum(h * w * k for (h, w), k in zip(grids, per))
    # The demo default gives the first layer all 6 kinds; the OD API's reduced layer has 3.
    assert per[0] == 6 and not cfg.anchors.reduce_boxes_in_lowest_layer


@pytest.mark.parametrize("kwargs,match", [
    (dict(aspect_ratios=()), "aspect_ratios"),
    (dict(aspect_ratios=(1.0, -2.0)), "aspect_ratios"),
    (dict(min_scale=0.9, max_scale=0.2), "min_scale"),
    (dict(base_anchor_size=(1.0, 0.0)), "base_anchor_size"),
])
def test_ssd_anchors_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        anchors.ssd_anchors(64, 64, **kwargs)
