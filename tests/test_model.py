"""training.model: the SSD MobileNetV2 graph agrees with app.anchors and the seed config."""

import dataclasses

import pytest

tf = pytest.importorskip("tensorflow")

from app import anchors as app_anchors  # noqa: E402
from app.errors import UserError  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training.model import build_ssd  # noqa: E402


def _cfg(height, width, **kw):
    return dataclasses.replace(ModelConfig(), input_height=height, input_width=width, **kw)


@pytest.mark.parametrize("height,width", [(192, 224), (514, 614)])
def test_output_rows_match_anchor_count(height, width):
    cfg = _cfg(height, width)
    model = build_ssd(cfg)
    n = len(app_anchors.anchors_from_config(cfg))
    assert model.output_names == ["box_encodings", "class_logits"]
    assert model.outputs[0].shape.as_list() == [None, n, 4]
    assert model.outputs[1].shape.as_list() == [None, n, 3]
    # The predictor convs sit on the ceil-size grids app.anchors assumes.
    grids = [tuple(model.get_layer("BoxPredictor_{}_BoxEncodingPredictor".format(i)).output.shape[1:3])
             for i in range(6)]
    assert grids == app_anchors.feature_map_shapes(height, width)
    if (height, width) == (514, 614):
        assert grids[0] == (33, 39) and grids[-1] == (2, 2)


def test_forward_shapes_bias_and_depth_rules():
    cfg = _cfg(96, 128, depth_multiplier=0.35, min_depth=16)
    model = build_ssd(cfg)
    assert model.input.name == "image"
    x = tf.random.uniform((2, 96, 128, 3), -1.0, 1.0, seed=1)
    boxes, logits = model(x, training=False)
    n = len(app_anchors.anchors_from_config(cfg))
    assert boxes.shape == (2, n, 4) and logits.shape == (2, n, 3)
    # class_prediction_bias_init -4.6 and std 0.01 kernels: logits start near -4.6 (score ~1%).
    assert abs(float(tf.reduce_mean(logits)) + 4.6) < 0.3
    # OD API depth rules: last 1x1 conv scaled by alpha; min_depth on non-expansion convs;
    # extra layers 512/256/256/128 * alpha, at least min_depth.
    assert model.get_layer("Conv_1").filters == 448  # make_divisible(1280 * 0.35)
    assert model.get_layer("expanded_conv_project").filters == 16
    assert model.get_layer("block_1_expand").filters == 6 * 16
    assert model.get_layer("layer_20_2_Conv2d_3x3_s2_179").filters == 179
    assert model.get_layer("layer_23_1_Conv2d_1x1_22").filters == 22
    bn = model.get_layer("bn_Conv1")
    assert bn.momentum == pytest.approx(0.97) and bn.epsilon == pytest.approx(0.001)
    # L2 (OD API weight w -> keras l2(w / 2)) on every conv kernel, summed into model.losses.
    kernels = [w for w in model.trainable_weights if "kernel" in w.name]
    expected = sum(0.5 * cfg.l2_weight * float(tf.reduce_sum(tf.square(k))) for k in kernels)
    assert float(tf.add_n(model.losses)) == pytest.approx(expected, rel=1e-4)


def test_imagenet_with_unsupported_alpha_is_a_user_error():
    with pytest.raises(UserError, match="depth_multiplier"):
        build_ssd(_cfg(96, 96, depth_multiplier=0.6, backbone_weights="imagenet"))


def test_bad_num_layers_is_a_user_error():
    cfg = _cfg(96, 96)
    cfg = dataclasses.replace(cfg, anchors=dataclasses.replace(cfg.anchors, num_layers=7))
    with pytest.raises(UserError, match="num_layers"):
        build_ssd(cfg)


def test_fewer_layers_still_match_anchors():
    cfg = _cfg(128, 96)
    cfg = dataclasses.replace(cfg, anchors=dataclasses.replace(cfg.anchors, num_layers=4))
    model = build_ssd(cfg)
    assert model.outputs[0].shape[1] == len(app_anchors.anchors_from_config(cfg))
    predictors = [l.name for l in model.layers if l.name.endswith("_ClassPredictor")]
    assert len(predictors) == 4
