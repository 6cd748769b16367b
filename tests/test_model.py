"""training.model: the SSD MobileNetV2 graph agrees with app.model.anchors and the seed config."""

import dataclasses

import pytest

tf = pytest.importorskip("tensorflow")

from app.model import anchors as app_anchors  # noqa: E402
from app.errors import UserError  # noqa: E402
from training.config import ModelConfig  # noqa: E402
from training import model as ssd_model  # noqa: E402
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
    # The predictor convs sit on the ceil-size grids app.model.anchors assumes.
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


@pytest.mark.parametrize("height,width", [(96, 128), (97, 111)])
def test_same_padding_computes_what_keras_zero_padding_does(height, width, tmp_path):
    # Depth 1.0: every layer keeps the stock shapes (min_depth and the last-conv rule change none),
    # so the stock network's weights load as they are.
    cfg = _cfg(height, width, depth_multiplier=1.0)
    stock = ssd_model._keras_mobilenet_v2(cfg)
    ours = ssd_model.build_backbone(cfg)
    kinds = [type(layer).__name__ for layer in stock.layers]
    assert kinds.count("ZeroPadding2D") == 4  # blocks 1, 3, 6 and 13, before their stride-2 depthwise conv
    assert "ZeroPadding2D" not in [type(layer).__name__ for layer in ours.layers]
    assert ours.get_layer("block_13_depthwise").padding == "same"
    # A checkpoint of the padded network (as older runs wrote) restores into ours.
    path = tf.train.Checkpoint(model=stock).save(str(tmp_path / "ckpt"))
    tf.train.Checkpoint(model=ours).restore(path).assert_consumed()
    x = tf.random.uniform((2, height, width, 3), -1.0, 1.0, seed=3)
    expected, got = stock(x, training=False), ours(x, training=False)
    assert got.shape == expected.shape
    assert float(tf.reduce_max(tf.abs(got - expected))) <= 1e-5 * float(tf.reduce_max(tf.abs(expected)))


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


def _layer_kinds(model, prefix):
    return [(type(l).__name__, l.name) for l in model.layers if l.name.startswith(prefix)]


@pytest.mark.parametrize("extractor, first_map", [
    ("ssd_mobilenet_v2_keras", "block_13_expand_relu"), ("ssd_mobiledet_edgetpu", "mobiledet_17_ibn_add")])
def test_ssdlite_heads_are_separable_on_both_backbones(extractor, first_map):
    cfg = _cfg(192, 224, feature_extractor=extractor, use_depthwise=True, box_predictor_kernel_size=3)
    model = build_ssd(cfg)
    n = len(app_anchors.anchors_from_config(cfg))
    assert model.name == "ssdlite_" + extractor[4:].replace("_keras", "")
    assert model.outputs[0].shape.as_list() == [None, n, 4]
    assert model.outputs[1].shape.as_list() == [None, n, 3]
    grids = [tuple(model.get_layer("BoxPredictor_{}_ClassPredictor".format(i)).output.shape[1:3])
             for i in range(6)]
    assert grids == app_anchors.feature_map_shapes(192, 224) == [(12, 14), (6, 7), (3, 4), (2, 2), (1, 1), (1, 1)]
    # Predictor: 3x3 depthwise -> BN -> ReLU6 -> 1x1 conv with bias, on the backbone's stride-16 map.
    head = model.get_layer("BoxPredictor_0_ClassPredictor_depthwise")
    assert head.input.name.startswith(first_map)
    assert [k for k, _ in _layer_kinds(model, "BoxPredictor_0_ClassPredictor")] == [
        "DepthwiseConv2D", "BatchNormalization", "ReLU", "Conv2D"]
    channels = int(head.input.shape[-1])
    classes = model.get_layer("BoxPredictor_0_ClassPredictor")
    assert head.kernel_size == (3, 3) and head.strides == (1, 1) and classes.kernel_size == (1, 1)
    per_location = app_anchors.anchors_per_location(6, cfg.anchors.aspect_ratios, 1.0, False)[0]
    # Hand count: depthwise 9C, BN 4C (gamma, beta, mean, variance), 1x1 conv C x (A x 3) + bias.
    params = sum(l.count_params() for l in (head, model.get_layer(head.name + "_BN"), classes))
    assert params == 9 * channels + 4 * channels + (channels + 1) * per_location * 3
    # Extra layer: 1x1 conv, then 3x3 stride-2 depthwise and a 1x1 conv (each BN + ReLU6).
    assert [k for k, _ in _layer_kinds(model, "layer_20_")] == [
        "Conv2D", "BatchNormalization", "ReLU"] + ["DepthwiseConv2D", "BatchNormalization", "ReLU",
                                                   "Conv2D", "BatchNormalization", "ReLU"]
    extra = model.get_layer("layer_20_2_Conv2d_3x3_s2_256_depthwise")
    assert extra.strides == (2, 2) and extra.kernel_size == (3, 3)
    assert model.get_layer("layer_20_2_Conv2d_3x3_s2_256").kernel_size == (1, 1)


def test_ssdlite_is_smaller_than_ssd_with_the_same_anchors():
    ssd = build_ssd(_cfg(128, 128, box_predictor_kernel_size=3))
    lite = build_ssd(_cfg(128, 128, use_depthwise=True, box_predictor_kernel_size=3))
    assert ssd.outputs[0].shape.as_list() == lite.outputs[0].shape.as_list()
    assert lite.count_params() < 0.6 * ssd.count_params()


@pytest.mark.parametrize("kw, match", [
    ({"feature_extractor": "ssd_resnet50"}, "model.feature_extractor: expected ssd_mobilenet_v2_keras | "
                                            "ssd_mobiledet_edgetpu, got 'ssd_resnet50'"),
    ({"feature_extractor": "ssd_mobiledet_edgetpu", "backbone_weights": "imagenet"},
     "model.backbone_weights: ssd_mobiledet_edgetpu has no published Keras weights"),
])
def test_bad_backbone_choice_is_a_user_error(kw, match):
    with pytest.raises(UserError, match=match):
        build_ssd(_cfg(96, 96, **kw))
