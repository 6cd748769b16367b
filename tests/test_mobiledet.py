"""training.mobiledet: the plain-Keras MobileDet-EdgeTPU is Model Garden's MobileDetEdgeTPU, layer for layer.

Model Garden (tf-models-official, installed) is the reference: built with the same filter
scale and batch-norm settings, its custom blocks must hold exactly the variables ours hold, in
the same order, and its C4/C5 endpoints (levels 4 and 5) must have our feature maps' shapes.
"""

import math

import pytest

tf = pytest.importorskip("tensorflow")
mg_mobiledet = pytest.importorskip("official.vision.modeling.backbones.mobiledet")

import tf_keras as keras  # noqa: E402

from training import mobiledet  # noqa: E402

HEIGHT, WIDTH = 192, 224


def _model_garden(multiplier):
    return mg_mobiledet.MobileDet(
        model_id="MobileDetEdgeTPU", filter_size_scale=multiplier,
        input_specs=keras.layers.InputSpec(shape=[None, HEIGHT, WIDTH, 3]),
        norm_momentum=mobiledet.BN_DECAY, norm_epsilon=mobiledet.BN_EPSILON)


def _count(model, kinds):
    return sum(type(layer).__name__ in kinds for layer in model.layers)


def _mg_residual_adds(mg):
    """Blocks whose call adds the shortcut, by Model Garden's own condition."""
    return sum(getattr(b, "_use_residual", False) and b._in_filters == b._out_filters
               and b._strides == 1 for b in mg.layers)


@pytest.mark.parametrize("multiplier", [0.5, 1.0])
def test_same_weights_layers_and_strides_as_model_garden(multiplier):
    ours = mobiledet.build_mobiledet_edgetpu(HEIGHT, WIDTH, multiplier)
    mg = _model_garden(multiplier)
    assert ([tuple(w.shape) for w in ours.trainable_weights]
            == [tuple(w.shape) for w in mg.trainable_weights])
    assert ([tuple(w.shape) for w in ours.non_trainable_weights]
            == [tuple(w.shape) for w in mg.non_trainable_weights])
    assert ours.count_params() == mg.count_params()
    if multiplier == 1.0:
        assert ours.count_params() == 2815456  # the backbone at full width, for the record
    mg_kernels = [w for w in mg.weights if w.name.endswith(("kernel:0", "depthwise_kernel:0"))]
    assert _count(ours, ("Conv2D", "DepthwiseConv2D")) == len(mg_kernels) == 57
    assert _count(ours, ("BatchNormalization",)) == sum(w.name.endswith("gamma:0") for w in mg.weights)
    assert _count(ours, ("Add",)) == _mg_residual_adds(mg) == 15
    c4, c5 = (tuple(t.shape[1:]) for t in ours.outputs)
    assert c4 == tuple(mg.output_specs["4"][1:]) and c5 == tuple(mg.output_specs["5"][1:])
    assert c4[:2] == (math.ceil(HEIGHT / 16), math.ceil(WIDTH / 16))
    assert c5[:2] == (math.ceil(HEIGHT / 32), math.ceil(WIDTH / 32))
    assert (c4[2], c5[2]) == (mobiledet.scale_filters(96, multiplier), mobiledet.scale_filters(384, multiplier))


def test_only_standard_layers_with_od_api_hyperparameters():
    ours = mobiledet.build_mobiledet_edgetpu(64, 96, 0.5)
    kinds = {type(layer).__name__ for layer in ours.layers}
    assert kinds == {"InputLayer", "Conv2D", "DepthwiseConv2D", "BatchNormalization", "ReLU", "Add"}
    bn = ours.get_layer("mobiledet_17_ibn_project_BN")
    assert bn.momentum == pytest.approx(0.99) and bn.epsilon == pytest.approx(0.01)
    # L2 4e-5 the slim way (w * sum(x^2) / 2) on every conv and depthwise kernel.
    kernels = [w for w in ours.trainable_weights if "kernel" in w.name]
    expected = sum(0.5 * 4e-5 * float(tf.reduce_sum(tf.square(k))) for k in kernels)
    assert float(tf.add_n(ours.losses)) == pytest.approx(expected, rel=1e-4)


@pytest.mark.parametrize("value, expected", [(16, 8), (96, 48), (20, 8), (28, 16), (384, 192)])
def test_scale_filters_rounds_half_up_to_eight(value, expected):
    assert mobiledet.scale_filters(value, 0.5) == expected


def test_bad_multiplier_is_a_value_error():
    with pytest.raises(ValueError, match="multiplier: expected > 0, got 0"):
        mobiledet.build_mobiledet_edgetpu(64, 64, 0)
