"""app.model.box_coder (faster_rcnn_box_coder) against hand-computed codes, and encode/decode round trips."""

import math

import numpy as np
import pytest

from app.model import anchors, box_coder


def test_encode_hand_computed():
    anchor = [[0.5, 0.5, 0.2, 0.2]]
    # Box centred (0.5, 0.55), size 0.2 x 0.2 -> ty 0, tx 0.05/0.2*10 = 2.5, th = tw = 0.
    np.testing.assert_allclose(box_coder.encode([[0.4, 0.45, 0.6, 0.65]], anchor),
                               [[0.0, 2.5, 0.0, 0.0]], atol=1e-5)
    # Box twice the anchor height, centred -> th = 5 * ln 2 = 3.4657.
    np.testing.assert_allclose(box_coder.encode([[0.3, 0.4, 0.7, 0.6]], anchor),
                               [[0.0, 0.0, 5 * math.log(2.0), 0.0]], atol=1e-5)


def test_decode_hand_computed():
    anchor = [[0.5, 0.5, 0.2, 0.4]]
    # ty = 10 -> yc = 0.5 + 1*0.2 = 0.7; tx = -5 -> xc = 0.5 - 0.5*0.4 = 0.3;
    # th = 0 -> h = 0.2; tw = 5*ln(0.5) -> w = 0.2.
    got = box_coder.decode([[10.0, -5.0, 0.0, 5 * math.log(0.5)]], anchor)
    np.testing.assert_allclose(got, [[0.6, 0.2, 0.8, 0.4]], atol=1e-6)
    assert got.dtype == np.float32


def test_custom_scales():
    anchor = [[0.5, 0.5, 0.2, 0.2]]
    got = box_coder.encode([[0.4, 0.45, 0.6, 0.65]], anchor, scales=(1.0, 1.0, 1.0, 1.0))
    np.testing.assert_allclose(got, [[0.0, 0.25, 0.0, 0.0]], atol=1e-6)


def test_round_trip_on_seed_anchors():
    a = anchors.ssd_anchors(514, 614)
    rng = np.random.RandomState(0)
    yx = rng.uniform(0.0, 0.8, size=(len(a), 2))
    hw = rng.uniform(0.02, 0.2, size=(len(a), 2))
    boxes = np.concatenate([yx, yx + hw], axis=1).astype(np.float32)
    codes = box_coder.encode(boxes, a)
    np.testing.assert_allclose(box_coder.decode(codes, a), boxes, atol=2e-6)
    back = box_coder.encode(box_coder.decode(codes, a), a)
    np.testing.assert_allclose(back, codes, atol=1e-3)


def test_zero_size_box_encodes_finite():
    codes = box_coder.encode([[0.5, 0.5, 0.5, 0.5]], [[0.5, 0.5, 0.1, 0.1]])
    assert np.all(np.isfinite(codes))
    # log(1e-8 / 0.1) * 5 = -80.6
    np.testing.assert_allclose(codes[0, 2], 5 * math.log(1e-8 / (0.1 + 1e-8)), rtol=1e-4)


@pytest.mark.parametrize("boxes,anchor,match", [
    (np.zeros((3, 4)), np.zeros((2, 4)), "anchors must have the shape"),
    (np.zeros((3,)), np.zeros((3,)), r"boxes must be \[N, 4\]"),
])
def test_encode_rejects_bad_shapes(boxes, anchor, match):
    with pytest.raises(ValueError, match=match):
        box_coder.encode(boxes, anchor)


def test_rejects_bad_scales():
    with pytest.raises(ValueError, match="scales"):
        box_coder.decode(np.zeros((1, 4)), [[0.5, 0.5, 0.1, 0.1]], scales=(10.0, 10.0, 5.0))
