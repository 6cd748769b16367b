"""What each OD API pipeline.config field becomes in edgedet's config.yaml.

A field path has its list indices removed ("...aspect_ratios[3]" -> "...aspect_ratios[]"); it is
looked up exactly, then by the longest "prefix.*" rule. A field with no rule at all is reported
as not supported (see `lookup`), so a new OD API field can never vanish silently.

Three kinds of rule:
  Key(key, convert)      the value goes to a config.yaml key (dotted, e.g. "model.input_height").
  Same(expected, why)    edgedet always behaves like this value (or one of this tuple of values)
                         and has no key for it; any other value is reported as not supported.
  No(why)                not supported, with the reason.
"""

import collections

from training.config import AUGMENTATIONS

Key = collections.namedtuple("Key", "key convert")
Key.__new__.__defaults__ = (None,)
Same = collections.namedtuple("Same", "expected why")
No = collections.namedtuple("No", "why")


class NotSupported(Exception):
    """Raised by a Key converter when the value has no edgedet equivalent."""


def _score_converter(value):
    if value == "IDENTITY":
        raise NotSupported("edgedet needs a sigmoid or softmax score converter, not IDENTITY")
    return value.lower()


def _positive_steps(value):
    if value <= 0:
        raise NotSupported("0 means 'train forever' in the OD API; edgedet needs a step count")
    return value


def _present(_):
    return True


def _color_ordering(value):
    if value not in (0, 1):
        raise NotSupported("the OD API defines color_ordering 0 and 1 only")
    return value


def _feature_extractor(value):
    # ssd_mobilenet_v2 is the TF1 (slim) name of the network ssd_mobilenet_v2_keras builds in TF2.
    return "ssd_mobilenet_v2_keras" if value == "ssd_mobilenet_v2" else value


SSD = "model.ssd."
FE = SSD + "feature_extractor."
BP = SSD + "box_predictor.convolutional_box_predictor."
OPT = "train_config.optimizer."
COSINE = OPT + "momentum_optimizer.learning_rate.cosine_decay_learning_rate."
AUG = "train_config.data_augmentation_options[]."
CROP = AUG + "random_crop_image."
SSD_CROP = AUG + "ssd_random_crop.operations[]."

# OD API preprocessing step -> the config key its presence sets (see import_config._apply_presence).
AUGMENTATION_KEYS = collections.OrderedDict((step, "train." + key) for step, key in AUGMENTATIONS)
CROP_FIELDS = ("min_object_covered", "min_aspect_ratio", "max_aspect_ratio", "min_area", "max_area",
               "overlap_thresh", "clip_boxes", "random_coef")

NO_INIT = No("edgedet has no initializer key; the model code chooses its own initializers")
NO_TF1 = "TF1 queue/session setting with no effect under TF2 or in edgedet"
NO_READER = "tf.data reader tuning; edgedet has no key for it"


def _hyperparams(prefix):
    """Rules for one conv_hyperparams block (feature extractor or box predictor)."""
    return {
        prefix + "op": Same("CONV", "edgedet's layers are convolutions"),
        prefix + "activation": Same("RELU_6", "MobileNetV2 and its SSD layers use ReLU6"),
        prefix + "regularizer.l2_regularizer.weight": Key("model.l2_weight"),
        prefix + "regularizer.l1_regularizer.*": No("edgedet regularizes with L2 only"),
        prefix + "initializer.*": NO_INIT,
        prefix + "batch_norm.decay": Key("model.batch_norm_decay"),
        prefix + "batch_norm.epsilon": Key("model.batch_norm_epsilon"),
        prefix + "batch_norm.center": Same(True, "batch norm has a learned offset (beta)"),
        prefix + "batch_norm.scale": Same(True, "batch norm has a learned scale (gamma)"),
        prefix + "batch_norm.train": Same(True, "batch norm is trained"),
        prefix + "sync_batch_norm.*": No("cross-replica batch norm is not supported; use batch_norm"),
        prefix + "group_norm": No("group norm is not supported; use batch_norm"),
        prefix + "regularize_depthwise": Same(False, "depthwise kernels are not regularized"),
        prefix + "force_use_bias": Same(False, "convolutions followed by batch norm have no bias"),
    }


RULES = {
    SSD + "num_classes": Key("model.labels"),  # the importer turns the count into names
    SSD + "image_resizer.fixed_shape_resizer.height": Key("model.input_height"),
    SSD + "image_resizer.fixed_shape_resizer.width": Key("model.input_width"),
    SSD + "image_resizer.fixed_shape_resizer.resize_method": Same(
        "BILINEAR", "app/model/preprocess.py stretches with bilinear resize"),
    SSD + "image_resizer.fixed_shape_resizer.convert_to_grayscale": Same(False, "input is RGB"),
    FE + "type": Key("model.feature_extractor", _feature_extractor),  # checked on import (architecture.py)
    FE + "depth_multiplier": Key("model.depth_multiplier"),
    FE + "min_depth": Key("model.min_depth"),
    FE + "num_layers": Key("model.anchors.num_layers"),
    FE + "pad_to_multiple": Same(1, "the input is not padded"),
    FE + "use_explicit_padding": Same(False, "convolutions use 'same' padding"),
    FE + "use_depthwise": Key("model.use_depthwise"),  # SSDLite extra layers
    FE + "override_base_feature_extractor_hyperparams": Same(
        True, "one set of conv hyperparameters applies to the backbone and the extra layers"),
    FE + "replace_preprocessor_with_placeholder": No("export graph option; edgedet exports its own"),
    FE + "spaghettinet_arch_name": No("SpaghettiNet is not supported"),
    SSD + "box_coder.faster_rcnn_box_coder.y_scale": Key("model.box_coder.y_scale"),
    SSD + "box_coder.faster_rcnn_box_coder.x_scale": Key("model.box_coder.x_scale"),
    SSD + "box_coder.faster_rcnn_box_coder.height_scale": Key("model.box_coder.height_scale"),
    SSD + "box_coder.faster_rcnn_box_coder.width_scale": Key("model.box_coder.width_scale"),
    SSD + "matcher.argmax_matcher.matched_threshold": Key("train.matched_threshold"),
    SSD + "matcher.argmax_matcher.unmatched_threshold": Key("train.unmatched_threshold"),
    SSD + "matcher.argmax_matcher.force_match_for_each_row": Key("train.force_match_for_each_row"),
    SSD + "matcher.argmax_matcher.ignore_thresholds": Same(False, "the matcher uses its thresholds"),
    SSD + "matcher.argmax_matcher.negatives_lower_than_unmatched": Same(
        True, "anchors below unmatched_threshold are negatives"),
    SSD + "matcher.argmax_matcher.use_matmul_gather": No(
        "TPU speed option of the OD API matcher; the matches are the same without it"),
    SSD + "similarity_calculator.iou_similarity": Same(None, "anchors are matched by IoU"),
    BP + "kernel_size": Key("model.box_predictor_kernel_size"),
    BP + "class_prediction_bias_init": Key("model.class_prediction_bias_init"),
    BP + "min_depth": Same(0, "the predictor has no extra layers"),
    BP + "max_depth": Same(0, "the predictor has no extra layers"),
    BP + "num_layers_before_predictor": Same(0, "the predictor has no extra layers"),
    BP + "use_dropout": Same(False, "the predictor has no dropout"),
    BP + "dropout_keep_probability": No("only used with use_dropout: true; edgedet has no dropout"),
    BP + "box_code_size": Same(4, "boxes are coded as (ty, tx, th, tw)"),
    BP + "apply_sigmoid_to_scores": Same(False, "the predictor outputs logits"),
    BP + "use_depthwise": Key("model.use_depthwise"),  # SSDLite predictor; one key for both
    BP + "box_encodings_clip_range.*": No("box encodings are not clipped in edgedet"),
    SSD + "anchor_generator.ssd_anchor_generator.num_layers": Key("model.anchors.num_layers"),
    SSD + "anchor_generator.ssd_anchor_generator.min_scale": Key("model.anchors.min_scale"),
    SSD + "anchor_generator.ssd_anchor_generator.max_scale": Key("model.anchors.max_scale"),
    SSD + "anchor_generator.ssd_anchor_generator.aspect_ratios[]": Key("model.anchors.aspect_ratios"),
    SSD + "anchor_generator.ssd_anchor_generator.interpolated_scale_aspect_ratio": Key(
        "model.anchors.interpolated_scale_aspect_ratio"),
    SSD + "anchor_generator.ssd_anchor_generator.reduce_boxes_in_lowest_layer": Key(
        "model.anchors.reduce_boxes_in_lowest_layer"),
    SSD + "anchor_generator.ssd_anchor_generator.base_anchor_height": Key(
        "model.anchors.base_anchor_height"),
    SSD + "anchor_generator.ssd_anchor_generator.base_anchor_width": Key(
        "model.anchors.base_anchor_width"),
    SSD + "anchor_generator.ssd_anchor_generator.scales[]": No(
        "explicit scales are not supported; edgedet spaces scales from min_scale to max_scale"),
    SSD + "anchor_generator.ssd_anchor_generator.*": No(
        "anchor strides and offsets are derived from the feature maps (ceil division)"),
    SSD + "post_processing.batch_non_max_suppression.score_threshold": Key("eval.score_threshold"),
    SSD + "post_processing.batch_non_max_suppression.iou_threshold": Key("postprocess.iou_threshold"),
    SSD + "post_processing.batch_non_max_suppression.max_detections_per_class": Key(
        "postprocess.max_detections_per_class"),
    SSD + "post_processing.batch_non_max_suppression.max_total_detections": Key(
        "postprocess.max_detections"),
    SSD + "post_processing.batch_non_max_suppression.use_class_agnostic_nms": Key(
        "postprocess.class_agnostic_nms"),
    SSD + "post_processing.batch_non_max_suppression.max_classes_per_detection": Same(
        1, "each box keeps one class"),
    SSD + "post_processing.batch_non_max_suppression.soft_nms_sigma": Same(0.0, "NMS is hard NMS"),
    SSD + "post_processing.batch_non_max_suppression.*": No(
        "TensorFlow NMS implementation option; edgedet's NMS is the numpy code in app/model/nms.py"),
    SSD + "post_processing.score_converter": Key("model.score_converter", _score_converter),
    SSD + "post_processing.logit_scale": Same(1.0, "logits are not rescaled"),
    SSD + "loss.localization_loss.weighted_smooth_l1.delta": Key("train.smooth_l1_delta"),
    SSD + "loss.localization_loss.weighted_smooth_l1.anchorwise_output": No("OD API internal"),
    SSD + "loss.localization_loss.*": No("edgedet trains with weighted_smooth_l1"),
    SSD + "loss.classification_loss.weighted_sigmoid_focal.alpha": Key("train.focal_alpha"),
    SSD + "loss.classification_loss.weighted_sigmoid_focal.gamma": Key("train.focal_gamma"),
    SSD + "loss.classification_loss.weighted_sigmoid_focal.anchorwise_output": No("OD API internal"),
    SSD + "loss.classification_loss.*": No("edgedet trains with weighted_sigmoid_focal"),
    SSD + "loss.classification_weight": Key("train.classification_weight"),
    SSD + "loss.localization_weight": Key("train.localization_weight"),
    SSD + "loss.hard_example_miner.*": No("hard example mining is not supported (focal loss instead)"),
    SSD + "loss.hard_example_miner": No("hard example mining is not supported (focal loss instead)"),
    SSD + "loss.random_example_sampler.*": No("example sampling is not supported"),
    SSD + "loss.expected_loss_weights": Same("NONE", "every anchor is weighted equally"),
    SSD + "loss.min_num_negative_samples": No("only used with expected_loss_weights"),
    SSD + "loss.desired_negative_sampling_ratio": No("only used with expected_loss_weights"),
    SSD + "encode_background_as_zeros": Same(True, "class_logits has no background column"),
    SSD + "add_background_class": Same(True, "the background is implicit (all classes low)"),
    SSD + "explicit_background_class": Same(False, "the background is implicit"),
    SSD + "negative_class_weight": Same(1.0, "negative anchors have weight 1"),
    SSD + "normalize_loss_by_num_matches": Same(True, "losses are divided by the matched anchors"),
    SSD + "normalize_loc_loss_by_codesize": Same(True, "the box loss is divided by the code size 4"),
    SSD + "freeze_batchnorm": Same(False, "batch norm is trained"),
    SSD + "inplace_batchnorm_update": No(
        "TF1 graph-mode option; Keras updates batch-norm statistics during training by itself"),
    SSD + "use_confidences_as_targets": Same(False, "targets are the class labels"),
    SSD + "implicit_example_weight": Same(1.0, "every example has weight 1"),
    SSD + "return_raw_detections_during_predict": No("export option; edgedet exports raw heads"),
    "train_config.batch_size": Key("train.batch_size"),
    "train_config.num_steps": Key("train.steps", _positive_steps),
    "train_config.max_number_of_boxes": Key("data.max_boxes"),
    AUG + "random_horizontal_flip.probability": Same(0.5, "images are flipped half of the time"),
    AUG + "random_horizontal_flip.keypoint_flip_permutation[]": No("edgedet has no keypoints"),
    AUG + "random_vertical_flip.probability": Same(0.5, "images are flipped half of the time"),
    AUG + "random_vertical_flip.keypoint_flip_permutation[]": No("edgedet has no keypoints"),
    AUG + "random_rotation90.probability": Same(0.5, "images are turned half of the time"),
    AUG + "random_rotation90.keypoint_rot_permutation[]": No("edgedet has no keypoints"),
    AUG + "random_adjust_brightness.max_delta": Key("train.adjust_brightness.max_delta"),
    AUG + "random_adjust_contrast.min_delta": Key("train.adjust_contrast.min_delta"),
    AUG + "random_adjust_contrast.max_delta": Key("train.adjust_contrast.max_delta"),
    AUG + "random_adjust_hue.max_delta": Key("train.adjust_hue.max_delta"),
    AUG + "random_adjust_saturation.min_delta": Key("train.adjust_saturation.min_delta"),
    AUG + "random_adjust_saturation.max_delta": Key("train.adjust_saturation.max_delta"),
    AUG + "random_distort_color.color_ordering": Key("train.distort_color.color_ordering",
                                                     _color_ordering),
    AUG + "random_rgb_to_gray.probability": Key("train.rgb_to_gray.probability"),
    AUG + "random_black_patches.max_black_patches": Key("train.black_patches.max_black_patches"),
    AUG + "random_black_patches.probability": Key("train.black_patches.probability"),
    AUG + "random_black_patches.size_to_image_ratio": Key("train.black_patches.size_to_image_ratio"),
    AUG + "*": No("this OD API augmentation is not implemented in edgedet's tf.data pipeline "
                  "(training/data/augment.py)"),
    COSINE + "learning_rate_base": Key("train.learning_rate_base"),
    COSINE + "total_steps": Key("train.steps", _positive_steps),
    COSINE + "warmup_learning_rate": Key("train.warmup_learning_rate"),
    COSINE + "warmup_steps": Key("train.warmup_steps"),
    COSINE + "hold_base_rate_steps": Same(0, "the cosine decay starts right after the warmup"),
    OPT + "momentum_optimizer.momentum_optimizer_value": Key("train.momentum"),
    OPT + "momentum_optimizer.learning_rate.*": No(
        "edgedet's schedule is cosine decay with linear warmup; set train.learning_rate_base, "
        "train.warmup_learning_rate and train.warmup_steps by hand"),
    OPT + "rms_prop_optimizer.*": No("edgedet trains with SGD + momentum (momentum_optimizer)"),
    OPT + "adam_optimizer.*": No("edgedet trains with SGD + momentum (momentum_optimizer)"),
    OPT + "use_moving_average": No(
        "edgedet keeps no moving average of the weights; with false nothing is lost, with true "
        "the OD API evaluated the averaged weights and edgedet will not"),
    OPT + "moving_average_decay": No("edgedet keeps no moving average of the weights"),
    "train_config.sync_replicas": No(
        "TF1 SyncReplicasOptimizer; edgedet uses tf.distribute, which always averages gradients "
        "over all replicas synchronously (the global batch is train.batch_size)"),
    "train_config.replicas_to_aggregate": No(
        "TF1 SyncReplicasOptimizer; tf.distribute aggregates all replicas every step"),
    "train_config.startup_delay_steps": No("TF1 asynchronous-worker start delay; not needed"),
    "train_config.unpad_groundtruth_tensors": No(
        "OD API input-pipeline detail; it does not change what is learned"),
    "train_config.add_regularization_loss": Same(True, "the L2 loss is added"),
    "train_config.fine_tune_checkpoint": No(
        "import-config does not read checkpoints: `edgedet-train import-checkpoint` turns an OD API "
        "detection checkpoint into a workdir and `edgedet-train finetune` continues it"),
    "train_config.fine_tune_checkpoint_type": No("see fine_tune_checkpoint"),
    "train_config.fine_tune_checkpoint_version": No("see fine_tune_checkpoint"),
    "train_config.use_bfloat16": No("edgedet trains in float32"),
    "train_config.batch_queue_capacity": No(NO_TF1),
    "train_config.num_batch_queue_threads": No(NO_TF1),
    "train_config.prefetch_queue_capacity": No(NO_TF1),
    "train_config.keep_checkpoint_every_n_hours": No(
        "edgedet checkpoints by steps (train.checkpoint_every)"),
    "train_input_reader.label_map_path": Key("data.label_map"),
    "train_input_reader.tf_record_input_reader.input_path[]": Key("data.train"),
    "train_input_reader.shuffle": Same(True, "training examples are shuffled"),
    "train_input_reader.shuffle_buffer_size": Key("data.shuffle_buffer"),
    "train_input_reader.max_number_of_boxes": Key("data.max_boxes"),
    "train_input_reader.num_epochs": No("edgedet trains for train.steps, not epochs"),
    "eval_input_reader[].label_map_path": Key("data.label_map"),
    "eval_input_reader[].tf_record_input_reader.input_path[]": Key("data.eval"),
    "eval_input_reader[].shuffle": Same(False, "each eval image is used once, in order"),
    "eval_input_reader[].num_epochs": Same(1, "each eval image is used once, in order"),
    "eval_input_reader[].max_number_of_boxes": Key("data.max_boxes"),
    "train_input_reader.*": No(NO_READER),
    "eval_input_reader[].*": No(NO_READER),
    "eval_config.metrics_set[]": Same("coco_detection_metrics",
                                      "edgedet reports COCO detection mAP (pycocotools)"),
    "eval_config.use_moving_averages": No("edgedet keeps no moving average of the weights"),
    "eval_config.*": No("TF1 evaluator or visualization setting; edgedet has no key for it"),
    "graph_rewriter.quantization": Key("train.quantization.enabled", _present),
    "graph_rewriter.quantization.delay": Key("train.quantization.delay"),
    "graph_rewriter.quantization.weight_bits": Same(8, "the Edge TPU runs 8-bit weights"),
    "graph_rewriter.quantization.activation_bits": Same(8, "the Edge TPU runs 8-bit activations"),
    "graph_rewriter.quantization.symmetric": No(
        "edgedet uses tfmot's default 8-bit scheme, which has no such switch"),
}
RULES.update({AUG + step: Key(key, _present) for step, key in AUGMENTATION_KEYS.items()})
RULES.update({CROP + name: Key("train.random_crop." + name) for name in CROP_FIELDS})
RULES.update({SSD_CROP + name: Key("train.ssd_random_crop.operations[]." + name)
              for name in CROP_FIELDS})
RULES.update(_hyperparams(FE + "conv_hyperparams."))
RULES.update(_hyperparams(BP + "conv_hyperparams."))

# Rules that differ by feature_extractor.type; they take precedence over RULES.
EXTRACTOR_RULES = {
    "ssd_mobiledet_edgetpu": {
        FE + "override_base_feature_extractor_hyperparams": Same(
            False, "the MobileDet backbone keeps its own OD API hyperparameters (He-normal, L2 4e-5, "
            "batch norm decay 0.99, epsilon 0.01); conv_hyperparams apply to the extra layers"),
    },
}

UNKNOWN = No("edgedet has no equivalent for this OD API field")


def normalize(path):
    """'a[3].b[0]' -> 'a[].b[]': the form the rules are written in."""
    import re
    return re.sub(r"\[\d+\]", "[]", path)


def lookup(path, extractor=None):
    """The rule for a field path (indices allowed) in a config of that feature_extractor.type."""
    path = normalize(path)
    if path in EXTRACTOR_RULES.get(extractor, {}):
        return EXTRACTOR_RULES[extractor][path]
    if path in RULES:
        return RULES[path]
    parts = path.split(".")
    for n in range(len(parts) - 1, 0, -1):
        rule = RULES.get(".".join(parts[:n]) + ".*")
        if rule is not None:
            return rule
    return UNKNOWN
