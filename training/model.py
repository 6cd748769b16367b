"""SSD and SSDLite on MobileNetV2 or MobileDet-EdgeTPU (the OD API SSD meta-architecture) in tf_keras.

`model.feature_extractor` picks the backbone, `model.use_depthwise` the SSDLite heads. The
default network, SSD MobileNetV2 as the seed pipeline.config defines it:
  * backbone: tf_keras.applications.MobileNetV2(alpha=depth_multiplier), rebuilt
    from its config with the seed's conv hyperparameters (truncated normal
    initializer, L2 on kernels, batch-norm decay/epsilon) and the OD API's depth
    rules (`min_depth` on non-expansion convs, the last 1x1 conv scaled by alpha);
    its stride-2 depthwise convs pad SAME instead of after a ZeroPadding2D layer, as
    the OD API's MobileNetV2 does without use_explicit_padding (the same numbers:
    Keras pads what SAME pads; a Pad op and its gradient fewer per stride-2 block in
    training, and the same exported graph, where the converter folded the pads);
  * feature maps: 'block_13_expand_relu' (stride 16), 'out_relu' (stride 32), then
    extra layers of depth 512, 256, 256, 128 (times depth_multiplier, at least
    min_depth), each a 1x1 conv to depth/2 and a 3x3 stride-2 SAME conv, BN + RELU6;
  * convolutional_box_predictor per feature map: a box head (A * 4) and a class
    head (A * num_classes, bias `class_prediction_bias_init`), reshaped to one row
    per anchor in the order grid row -> grid column -> anchor kind, then
    concatenated over the feature maps.
`ssd_mobiledet_edgetpu` replaces the backbone by training/mobiledet.py (feature maps C4 and C5).
SSDLite (`use_depthwise`, the OD API's ssdlite configs) makes each extra layer's 3x3 stride-2
conv a 3x3 depthwise conv (BN + RELU6) followed by a 1x1 conv, and puts a k x k depthwise conv
(BN + RELU6) before each 1x1 predictor conv.
Only Conv2D, DepthwiseConv2D, BatchNormalization, ReLU, Add,
Reshape and Concatenate layers are used, so tfmot's quantize_model handles it.
"""

import json

import tf_keras as keras

from app.model import anchors as app_anchors
from app.model import preprocess as app_preprocess
from app.errors import UserError
from training import mobiledet

# The OD API's extra feature layer depths for SSD MobileNetV2 (before depth_multiplier).
EXTRA_LAYER_DEPTHS = (512, 256, 256, 128)
BACKBONE_FEATURES = ("block_13_expand_relu", "out_relu")
FEATURE_EXTRACTORS = ("ssd_mobilenet_v2_keras", "ssd_mobiledet_edgetpu")
# Width multipliers Keras publishes ImageNet MobileNetV2 weights for.
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
# The OD API scales MobileNetV2's last 1x1 conv (1280 channels) by alpha when alpha < 1.
LAST_CONV_FILTERS = 1280
EXPANSION = 6


def _make_divisible(value, divisor=8):
    """MobileNet channel rounding: nearest multiple of `divisor`, not below 90% of `value`."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _feature_hyperparams(model_cfg):
    """Initializer/regularizer configs of the feature extractor (seed conv_hyperparams)."""
    return {
        "initializer": keras.initializers.serialize(
            keras.initializers.TruncatedNormal(mean=0.0, stddev=0.03)),
        # The OD API builds l2_regularizer(w) as keras l2(0.5 * w) (slim's w * sum(x^2) / 2).
        "regularizer": keras.regularizers.serialize(
            keras.regularizers.L2(0.5 * model_cfg.l2_weight)),
    }


def _rewrite_backbone_layer(layer, model_cfg, hyper, filters_by_name):
    """Applies the seed hyperparameters and OD API depth rules to one layer config (in place)."""
    kind, conf, name = layer["class_name"], layer["config"], layer["config"]["name"]
    if kind == "Conv2D":
        if name == "Conv_1" and model_cfg.depth_multiplier < 1.0:
            conf["filters"] = _make_divisible(LAST_CONV_FILTERS * model_cfg.depth_multiplier)
        if name.endswith("_expand"):
            # Expansion width follows the (possibly min_depth-raised) block input.
            block = int(name.split("_")[1])
            previous = "block_{}_project".format(block - 1) if block > 1 else "expanded_conv_project"
            conf["filters"] = EXPANSION * filters_by_name[previous]
        elif conf["filters"] < model_cfg.min_depth:
            conf["filters"] = model_cfg.min_depth
        filters_by_name[name] = conf["filters"]
        conf["kernel_initializer"] = hyper["initializer"]
        conf["kernel_regularizer"] = hyper["regularizer"]
    elif kind == "DepthwiseConv2D":
        conf["depthwise_initializer"] = hyper["initializer"]
        conf["depthwise_regularizer"] = hyper["regularizer"]
    elif kind == "BatchNormalization":
        conf["momentum"] = model_cfg.batch_norm_decay
        conf["epsilon"] = model_cfg.batch_norm_epsilon


def _keras_mobilenet_v2(model_cfg):
    """The stock Keras MobileNetV2 (ImageNet weights if asked), validated against the config."""
    weights = model_cfg.backbone_weights
    if weights not in ("none", "imagenet"):
        raise UserError("config: model.backbone_weights: expected none | imagenet, got {!r}"
                        .format(weights))
    if weights == "imagenet" and model_cfg.depth_multiplier not in IMAGENET_ALPHAS:
        raise UserError(
            "config: model.depth_multiplier: Keras has ImageNet MobileNetV2 weights only for {}, "
            "got {}. Pick one of those or set model.backbone_weights: none."
            .format(", ".join(str(a) for a in IMAGENET_ALPHAS), model_cfg.depth_multiplier))
    shape = (model_cfg.input_height, model_cfg.input_width, 3)
    try:
        return keras.applications.MobileNetV2(
            input_shape=shape, alpha=model_cfg.depth_multiplier, include_top=False,
            weights=None if weights == "none" else "imagenet")
    except (IOError, OSError, ValueError) as e:
        raise UserError("config: model.backbone_weights: cannot get MobileNetV2 ImageNet weights "
                        "({}). Connect to the internet or set model.backbone_weights: none."
                        .format(str(e).splitlines()[0] if str(e) else type(e).__name__))


def _pad_same(layers):
    """The backbone's layer configs without its ZeroPadding2D layers, each conv they fed padding SAME.

    Keras pads a stride-2 k x k conv's h x w input by ((k//2 - 1 + h % 2, k//2), (k//2 - 1 + w % 2,
    k//2)) (imagenet_utils.correct_pad), which is what SAME pads at stride 2 for any odd k. The pad
    layers hold no weights, so checkpoints written with them restore unchanged.
    """
    pads = {l["config"]["name"]: l["inbound_nodes"] for l in layers if l["class_name"] == "ZeroPadding2D"}
    kept = [l for l in layers if l["class_name"] != "ZeroPadding2D"]
    for layer in kept:
        nodes = layer["inbound_nodes"]
        if nodes and nodes[0][0][0] in pads:
            layer["inbound_nodes"] = pads[nodes[0][0][0]]
            layer["config"]["padding"] = "same"
    return kept


def _rename_input(config, new_name):
    """Renames the functional model's single InputLayer (and every reference to it)."""
    old = config["input_layers"][0][0]
    text = json.dumps(config)
    # Layer names appear as quoted strings; no other layer is called exactly like the input.
    return json.loads(text.replace('"{}"'.format(old), '"{}"'.format(new_name)))


def _copy_matching_weights(source, target):
    """Copies weights layer by layer where shapes agree; returns (copied, skipped) counts."""
    copied = skipped = 0
    for layer in target.layers:
        values = source.get_layer(layer.name).get_weights() if layer.weights else []
        if not values:
            continue
        if [v.shape for v in values] == [tuple(w.shape) for w in layer.weights]:
            layer.set_weights(values)
            copied += 1
        else:
            skipped += 1
    return copied, skipped


def build_backbone(model_cfg):
    """MobileNetV2 up to 'out_relu' with the seed hyperparameters and OD API depth rules.

    Args:
      model_cfg: training.config.ModelConfig-like (input size, depth_multiplier,
        min_depth, backbone_weights, l2_weight, batch_norm_*).

    Returns:
      keras.Model from float32 [B, H, W, 3] in [-1, 1] to the 'out_relu' map.
    """
    stock = _keras_mobilenet_v2(model_cfg)
    config = stock.get_config()
    hyper, filters = _feature_hyperparams(model_cfg), {}
    for layer in config["layers"]:
        _rewrite_backbone_layer(layer, model_cfg, hyper, filters)
    config["layers"] = _pad_same(config["layers"])
    backbone = keras.Model.from_config(_rename_input(config, "image"))
    if model_cfg.backbone_weights == "imagenet":
        copied, skipped = _copy_matching_weights(stock, backbone)
        if skipped:
            print("edgedet-train: ImageNet weights loaded into {} layers; {} layers changed shape "
                  "(min_depth / OD API depth rules) and start from random init".format(copied, skipped))
    return backbone


def _conv_bn_relu6(x, filters, kernel, stride, name, model_cfg, hyper):
    """Conv (no bias) -> BatchNorm -> ReLU6, SAME padding (ceil-size output)."""
    x = keras.layers.Conv2D(
        filters, kernel, strides=stride, padding="same", use_bias=False,
        kernel_initializer=keras.initializers.deserialize(hyper["initializer"]),
        kernel_regularizer=keras.regularizers.deserialize(hyper["regularizer"]), name=name)(x)
    return _bn_relu6(x, name, model_cfg)


def _depthwise_bn_relu6(x, kernel, stride, name, model_cfg, hyper):
    """SSDLite's depthwise half: depthwise conv (no bias, not regularized) -> BatchNorm -> ReLU6."""
    x = keras.layers.DepthwiseConv2D(
        kernel, strides=stride, padding="same", use_bias=False,
        depthwise_initializer=keras.initializers.deserialize(hyper["initializer"]), name=name)(x)
    return _bn_relu6(x, name, model_cfg)


def _bn_relu6(x, name, model_cfg):
    """BatchNorm (name_BN) -> ReLU6 (name_relu6) after the conv called `name`."""
    x = keras.layers.BatchNormalization(
        momentum=model_cfg.batch_norm_decay, epsilon=model_cfg.batch_norm_epsilon,
        name=name + "_BN")(x)
    return keras.layers.ReLU(6.0, name=name + "_relu6")(x)


def _backbone_maps(model_cfg):
    """(input "image", [stride-16 map, stride-32 map]) of the configured backbone."""
    if model_cfg.feature_extractor == "ssd_mobiledet_edgetpu":
        backbone = mobiledet.build_mobiledet_edgetpu(
            model_cfg.input_height, model_cfg.input_width, model_cfg.depth_multiplier)
        return backbone.input, list(backbone.outputs)
    backbone = build_backbone(model_cfg)
    return backbone.input, [backbone.get_layer(n).output for n in BACKBONE_FEATURES]


def extra_layers(model_cfg):
    """The extra feature layers after the backbone, one per feature map past the second.

    Args:
      model_cfg: training.config.ModelConfig-like (depth_multiplier, min_depth, anchors.num_layers).

    Returns:
      list of ((name, filters, kernel, stride) of the 1x1 conv, the same of the 3x3
      stride-2 conv); each conv is followed by a batch norm called name + "_BN". With SSDLite
      (use_depthwise) the 3x3 conv is a depthwise conv name + "_depthwise" and a 1x1 conv `name`.
    """
    layers = []
    for i, depth in enumerate(EXTRA_LAYER_DEPTHS[:model_cfg.anchors.num_layers - len(BACKBONE_FEATURES)]):
        base = "layer_{}".format(20 + i)
        half = max(int(depth / 2 * model_cfg.depth_multiplier), model_cfg.min_depth)
        full = max(int(depth * model_cfg.depth_multiplier), model_cfg.min_depth)
        layers.append((("{}_1_Conv2d_1x1_{}".format(base, half), half, 1, 1),
                       ("{}_2_Conv2d_3x3_s2_{}".format(base, full), full, 3, 2)))
    return layers


def predictor_names(index):
    """(box head, class head) layer names of the box predictor on feature map `index`."""
    name = "BoxPredictor_{}".format(index)
    return name + "_BoxEncodingPredictor", name + "_ClassPredictor"


def _extra_layer(x, convs, model_cfg, hyper):
    """One extra feature layer from its extra_layers() spec: 1x1 conv, then the 3x3 stride-2 conv
    (SSDLite: depthwise 3x3 stride 2, then 1x1)."""
    (name1, filters1, kernel1, stride1), (name, filters, kernel, stride) = convs
    x = _conv_bn_relu6(x, filters1, kernel1, stride1, name1, model_cfg, hyper)
    if model_cfg.use_depthwise:
        x = _depthwise_bn_relu6(x, kernel, stride, name + "_depthwise", model_cfg, hyper)
        return _conv_bn_relu6(x, filters, 1, 1, name, model_cfg, hyper)
    return _conv_bn_relu6(x, filters, kernel, stride, name, model_cfg, hyper)


def _feature_maps(backbone_maps, model_cfg, num_layers):
    """The SSD feature maps: two from the backbone, then the extra stride-2 layers."""
    maps = backbone_maps[:num_layers]
    hyper = _feature_hyperparams(model_cfg)
    x = maps[-1]
    for convs in extra_layers(model_cfg):
        x = _extra_layer(x, convs, model_cfg, hyper)
        maps.append(x)
    return maps


def _predictor(fmap, filters, name, model_cfg, bias_init=0.0):
    """One predictor head on fmap [B, h, w, C] -> [B, h, w, filters] (SSDLite: depthwise first)."""
    kernel = model_cfg.box_predictor_kernel_size
    if model_cfg.use_depthwise:
        fmap = _depthwise_bn_relu6(fmap, kernel, 1, name + "_depthwise", model_cfg,
                                   _feature_hyperparams(model_cfg))
        kernel = 1
    return _predictor_conv(filters, kernel, name, model_cfg, bias_init)(fmap)


def _predictor_conv(filters, k, name, model_cfg, bias_init=0.0):
    """A convolutional_box_predictor head conv: random normal 0.01, L2, bias, no BN."""
    return keras.layers.Conv2D(
        filters, k, padding="same", use_bias=True,
        kernel_initializer=keras.initializers.RandomNormal(mean=0.0, stddev=0.01),
        kernel_regularizer=keras.regularizers.L2(0.5 * model_cfg.l2_weight),
        bias_initializer=keras.initializers.Constant(bias_init), name=name)


def _check_model_cfg(model_cfg):
    a = model_cfg.anchors
    if model_cfg.feature_extractor not in FEATURE_EXTRACTORS:
        raise UserError("config: model.feature_extractor: expected {}, got {!r}".format(
            " | ".join(FEATURE_EXTRACTORS), model_cfg.feature_extractor))
    if model_cfg.feature_extractor != FEATURE_EXTRACTORS[0] and model_cfg.backbone_weights != "none":
        raise UserError("config: model.backbone_weights: {} has no published Keras weights; set "
                        "model.backbone_weights: none".format(model_cfg.feature_extractor))
    if not 2 <= a.num_layers <= len(BACKBONE_FEATURES) + len(EXTRA_LAYER_DEPTHS):
        raise UserError("config: model.anchors.num_layers: the SSD has 2..6 feature maps, "
                        "got {}".format(a.num_layers))
    if not model_cfg.labels:
        raise UserError("config: model.labels: expected at least one class name, got none")
    if model_cfg.box_predictor_kernel_size < 1:
        raise UserError("config: model.box_predictor_kernel_size: expected >= 1, got {}"
                        .format(model_cfg.box_predictor_kernel_size))
    if model_cfg.resize not in app_preprocess.RESIZE_METHODS:
        raise UserError("config: model.resize: expected {}, got {!r}".format(
            " | ".join(app_preprocess.RESIZE_METHODS), model_cfg.resize))
    if model_cfg.depth_multiplier <= 0:
        raise UserError("config: model.depth_multiplier: expected > 0, got {}"
                        .format(model_cfg.depth_multiplier))


def build_ssd(model_cfg):
    """Builds the SSD (or SSDLite) Keras model on the configured backbone.

    Args:
      model_cfg: training.config.ModelConfig-like.

    Returns:
      keras.Model with input "image" float32 [B, H, W, 3] in [-1, 1] and outputs
      [box_encodings float32 [B, N, 4] (ty, tx, th, tw), class_logits float32
      [B, N, num_classes]], N == len(app.model.anchors.anchors_from_config(model_cfg)).
    """
    _check_model_cfg(model_cfg)
    a = model_cfg.anchors
    num_classes = len(model_cfg.labels)
    inputs, backbone_maps = _backbone_maps(model_cfg)
    maps = _feature_maps(backbone_maps, model_cfg, a.num_layers)
    per_location = app_anchors.anchors_per_location(
        a.num_layers, a.aspect_ratios, a.interpolated_scale_aspect_ratio,
        a.reduce_boxes_in_lowest_layer)
    boxes, logits = [], []
    for i, (fmap, count) in enumerate(zip(maps, per_location)):
        box_name, class_name = predictor_names(i)
        b = _predictor(fmap, count * 4, box_name, model_cfg)
        boxes.append(keras.layers.Reshape((-1, 4), name="BoxPredictor_{}_box_reshape".format(i))(b))
        c = _predictor(fmap, count * num_classes, class_name, model_cfg, model_cfg.class_prediction_bias_init)
        logits.append(keras.layers.Reshape((-1, num_classes), name="BoxPredictor_{}_class_reshape".format(i))(c))
    box_encodings = keras.layers.Concatenate(axis=1, name="box_encodings")(boxes)
    class_logits = keras.layers.Concatenate(axis=1, name="class_logits")(logits)
    return keras.Model(inputs, [box_encodings, class_logits], name=_model_name(model_cfg))


def _model_name(model_cfg):
    """e.g. ssd_mobilenet_v2, ssdlite_mobiledet_edgetpu (the OD API's config names)."""
    backbone = model_cfg.feature_extractor[len("ssd_"):].replace("_keras", "")
    return ("ssdlite_" if model_cfg.use_depthwise else "ssd_") + backbone


def freeze_batchnorm(model):
    """Every BatchNormalization layer of `model` (also inside tfmot wrappers) in inference mode:
    moving statistics, scale and offset stay as they are (the OD API's freeze_batchnorm).

    Returns:
      the number of layers frozen.
    """
    frozen = [m for m in model.submodules if isinstance(m, keras.layers.BatchNormalization)]
    for layer in frozen:
        layer.trainable = False  # a non-trainable tf_keras BatchNormalization runs as in inference
    return len(frozen)
