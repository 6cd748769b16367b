"""MobileDet-EdgeTPU (the OD API `ssd_mobiledet_edgetpu` backbone) from standard tf_keras layers.

MobileDets (Xiong et al., 2020, arXiv:2004.14525) were searched for the Edge TPU. Model
Garden ships the block spec (`official.vision.modeling.backbones.mobiledet`,
`MobileDetEdgeTPU`), but as custom block layers that tfmot's quantize_model cannot wrap.
Here every block is written out in Conv2D, DepthwiseConv2D, BatchNormalization, ReLU (6) and
Add layers, in the same order as Model Garden creates them, so the two have the same
weights (tests/test_mobiledet.py checks shapes and counts against Model Garden's).

Three kinds of block, each ending in a linear 1x1 projection + BN (+ Add when residual):
  fused    k x k conv (stride s) to in*expansion -> BN -> ReLU6;
  ibn      1x1 conv to in*expansion -> BN -> ReLU6 -> k x k depthwise (stride s) -> BN -> ReLU6;
  tucker   1x1 conv to in*input_ratio -> BN -> ReLU6 -> k x k conv to out*output_ratio -> BN -> ReLU6.
The SSD takes C4 (stride 16) and C5 (stride 32), as the OD API's SSDMobileDetFeatureExtractor
does. Hyperparameters are the OD API backbone's own (its config sets
override_base_feature_extractor_hyperparams: false): He-normal kernels, L2 weight 4e-5,
batch norm decay 0.99 and epsilon 0.01.
"""

import tf_keras as keras

# (kind, kernel, stride, filters, expansion | (input_ratio, output_ratio), residual)
# in the order of the OD API's mobiledet_edgetpu_backbone and Model Garden's MD_EdgeTPU_BLOCK_SPECS.
BLOCKS = (
    ("conv", 3, 2, 32, None, False),
    ("tucker", 3, 1, 16, (0.25, 0.75), False),
    ("fused", 3, 2, 16, 8, False), ("fused", 3, 1, 16, 4, True),
    ("fused", 3, 1, 16, 8, True), ("fused", 3, 1, 16, 4, True),
    ("fused", 5, 2, 40, 8, False), ("fused", 3, 1, 40, 4, True),
    ("fused", 3, 1, 40, 4, True), ("fused", 3, 1, 40, 4, True),
    ("ibn", 3, 2, 72, 8, False), ("ibn", 3, 1, 72, 8, True),
    ("fused", 3, 1, 72, 4, True), ("fused", 3, 1, 72, 4, True),
    ("ibn", 5, 1, 96, 8, False), ("ibn", 5, 1, 96, 8, True),
    ("ibn", 3, 1, 96, 8, True), ("ibn", 3, 1, 96, 8, True),
    ("ibn", 5, 2, 120, 8, False), ("ibn", 3, 1, 120, 8, True),
    ("ibn", 5, 1, 120, 4, True), ("ibn", 3, 1, 120, 8, True),
    ("ibn", 5, 1, 384, 8, False),
)
# Blocks whose outputs are the OD API's C4 (stride 16) and C5 (stride 32).
FEATURE_BLOCKS = (17, 22)
# The OD API MobileDet backbone's own hyperparameters (ssd_mobiledet_feature_extractor.py).
WEIGHT_DECAY = 4e-5
BN_DECAY = 0.99
BN_EPSILON = 0.01


def scale_filters(filters, multiplier, base=8):
    """Channels times `multiplier`, rounded half up to a multiple of `base`, at least `base`."""
    return max(base, int(filters * multiplier / base + 0.5) * base)


class _Builder(object):
    """Creates the named layers of one block; `prefix` is e.g. 'mobiledet_3_fused'."""

    def __init__(self, prefix):
        self.prefix = prefix

    def conv(self, x, filters, kernel, stride, part, relu=True):
        """Conv (no bias, SAME) -> BN [-> ReLU6]; layer names prefix_part[_BN|_relu6]."""
        x = keras.layers.Conv2D(
            filters, kernel, strides=stride, padding="same", use_bias=False,
            kernel_initializer=keras.initializers.HeNormal(),
            kernel_regularizer=keras.regularizers.L2(0.5 * WEIGHT_DECAY),  # slim's w * sum(x^2) / 2
            name="{}_{}".format(self.prefix, part))(x)
        return self._bn_relu(x, part, relu)

    def depthwise(self, x, kernel, stride, part):
        """Depthwise conv (no bias, SAME) -> BN -> ReLU6, He init adapted to a depthwise fan-in."""
        stddev = (2.0 / kernel ** 2) ** 0.5 / 0.87962566103423978  # truncated-normal correction
        x = keras.layers.DepthwiseConv2D(
            kernel, strides=stride, padding="same", use_bias=False,
            depthwise_initializer=keras.initializers.TruncatedNormal(stddev=stddev),
            depthwise_regularizer=keras.regularizers.L2(0.5 * WEIGHT_DECAY),
            name="{}_{}".format(self.prefix, part))(x)
        return self._bn_relu(x, part, True)

    def _bn_relu(self, x, part, relu):
        name = "{}_{}".format(self.prefix, part)
        x = keras.layers.BatchNormalization(momentum=BN_DECAY, epsilon=BN_EPSILON, name=name + "_BN")(x)
        return keras.layers.ReLU(6.0, name=name + "_relu6")(x) if relu else x


def _block(x, index, spec, multiplier):
    """One BLOCKS entry applied to x [B, H, W, C]; returns [B, H / stride, W / stride, filters']."""
    kind, kernel, stride, filters, ratio, residual = spec
    make = _Builder("mobiledet_{}_{}".format(index, kind))
    out = scale_filters(filters, multiplier)
    if kind == "conv":
        return make.conv(x, out, kernel, stride, "conv")
    inputs, channels = x, int(x.shape[-1])
    if kind == "fused":
        x = make.conv(x, channels * ratio, kernel, stride, "expand")
    elif kind == "ibn":
        x = make.conv(x, channels * ratio, 1, 1, "expand")
        x = make.depthwise(x, kernel, stride, "depthwise")
    else:
        x = make.conv(x, scale_filters(channels, ratio[0]), 1, 1, "reduce")
        x = make.conv(x, scale_filters(out, ratio[1]), kernel, stride, "conv")
    x = make.conv(x, out, 1, 1, "project", relu=False)
    if residual:
        assert stride == 1 and channels == out, spec  # BLOCKS marks only shape-keeping blocks
        x = keras.layers.Add(name=make.prefix + "_add")([inputs, x])
    return x


def build_mobiledet_edgetpu(height, width, multiplier):
    """MobileDet-EdgeTPU up to C5.

    Args:
      height, width: input size in pixels.
      multiplier: filter scale (the OD API depth_multiplier; Model Garden filter_size_scale), > 0.

    Returns:
      keras.Model from "image" float32 [B, height, width, 3] in [-1, 1] to
      [C4 float32 [B, ceil(height / 16), ceil(width / 16), 96'],
       C5 float32 [B, ceil(height / 32), ceil(width / 32), 384']] (' = times multiplier, rounded).
    """
    if multiplier <= 0:
        raise ValueError("multiplier: expected > 0, got {}".format(multiplier))
    image = keras.Input((height, width, 3), name="image")
    x, features = image, []
    for index, spec in enumerate(BLOCKS):
        x = _block(x, index, spec, multiplier)
        if index in FEATURE_BLOCKS:
            features.append(x)
    return keras.Model(image, features, name="mobiledet_edgetpu")
