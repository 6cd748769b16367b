"""Which OD API model architectures edgedet builds, and the reason it refuses any other.

Every pipeline.config parses (the schema is the OD API's whole), so a model edgedet does not
build is recognized by what it sets, not by a parse error: a non-SSD model, an FPN or BiFPN
feature extractor, another backbone, or a component (anchor generator, box predictor, ...)
other than the one edgedet implements. SSDLite (use_depthwise) and MobileDet-EdgeTPU are built.
"""

# ssd_mobilenet_v2 is the TF1 (slim) name of the network ssd_mobilenet_v2_keras builds in TF2.
SUPPORTED_EXTRACTORS = ("ssd_mobilenet_v2_keras", "ssd_mobilenet_v2", "ssd_mobiledet_edgetpu")
HINT = ("start from an SSD(Lite) MobileNetV2 or SSDLite MobileDet-EdgeTPU config such as "
        "ssd_mobilenet_v2_320x320_coco17_tpu-8.config")

# DetectionModel oneof choice -> what it is.
NON_SSD = {
    "faster_rcnn": "a Faster R-CNN (two-stage) model",
    "center_net": "a CenterNet (keypoint) model",
    "experimental_model": "an experimental model",
}

# (Ssd field, its oneof, the one choice edgedet implements, where edgedet does that).
COMPONENTS = (
    ("image_resizer", "image_resizer_oneof", "fixed_shape_resizer",
     "edgedet stretches every image to one fixed size"),
    ("anchor_generator", "anchor_generator_oneof", "ssd_anchor_generator",
     "edgedet's anchors are ssd_anchor_generator's (app/model/anchors.py)"),
    ("box_predictor", "box_predictor_oneof", "convolutional_box_predictor",
     "edgedet's SSD head is convolutional_box_predictor"),
    ("box_coder", "box_coder_oneof", "faster_rcnn_box_coder",
     "edgedet codes boxes as faster_rcnn_box_coder (app/model/box_coder.py)"),
    ("matcher", "matcher_oneof", "argmax_matcher", "edgedet matches anchors with argmax_matcher"),
    ("similarity_calculator", "region_similarity", "iou_similarity",
     "edgedet matches anchors by IoU"),
)


def unsupported_reason(msg):
    """Why edgedet cannot build the model of a TrainEvalPipelineConfig, or None if it can.

    Args:
      msg: a parsed TrainEvalPipelineConfig (training.odapi_proto.parse_pipeline).

    Returns:
      One sentence naming the unsupported field and value, or None.
    """
    kind = msg.model.WhichOneof("model")
    if kind is None:
        return "no model { ssd { ... } } block; " + HINT
    if kind != "ssd":
        return "model.{} is {}, not an SSD; {}".format(kind, NON_SSD.get(kind, "not an SSD"), HINT)
    ssd = msg.model.ssd
    return _feature_extractor_reason(ssd.feature_extractor) or _component_reason(ssd)


def _feature_extractor_reason(extractor):
    pyramid = extractor.WhichOneof("feature_pyramid_oneof")
    if pyramid == "bifpn":
        return ("model.ssd.feature_extractor.bifpn: '{}' uses EfficientDet's BiFPN, which edgedet "
                "does not build; {}".format(extractor.type, HINT))
    if pyramid == "fpn" or "fpn" in extractor.type:
        return ("model.ssd.feature_extractor: '{}' is an FPN feature extractor, which edgedet does "
                "not build (no FPN); {}".format(extractor.type, HINT))
    if extractor.type not in SUPPORTED_EXTRACTORS:
        return ("model.ssd.feature_extractor.type '{}' is not supported (edgedet builds these "
                "backbones: {}); {}".format(extractor.type, ", ".join(SUPPORTED_EXTRACTORS), HINT))
    return None


def _component_reason(ssd):
    for name, oneof, supported, why in COMPONENTS:
        block = getattr(ssd, name)
        choice = block.WhichOneof(oneof) if ssd.HasField(name) else None
        if choice is not None and choice != supported:
            return "model.ssd.{}.{} is not supported: {}; {}".format(name, choice, why, HINT)
    return None
