"""The training sections of config.yaml, validated at load (see app/config.py for the loader).

Each section is a frozen dataclass; every key has a default and a description.
Defaults here are the small demo: non-square 192x224 input, depth multiplier 0.5,
synthetic data, trainable from scratch on a 2-core machine in about 15 minutes.
`configs/seed.yaml` reproduces the user's seed pipeline.config at full size.
"""

import typing
from dataclasses import dataclass

from app import config as app_config
from app.config import opt


@dataclass(frozen=True)
class AnchorConfig:
    num_layers: int = opt(6, "Feature maps that carry anchors (ssd_anchor_generator.num_layers).")
    min_scale: float = opt(0.2, "Anchor scale of the first layer, as a fraction of the shorter side.")
    max_scale: float = opt(0.95, "Anchor scale of the last layer.")
    aspect_ratios: typing.List[float] = opt(
        None, "Aspect ratios (width/height) at every layer.", lambda: [1.0, 2.0, 0.5, 3.0, 0.3333])
    interpolated_scale_aspect_ratio: float = opt(
        1.0, "Aspect ratio of the extra anchor at sqrt(scale*next_scale); 0 disables it.")
    reduce_boxes_in_lowest_layer: bool = opt(
        False, "First layer has only 3 boxes (0.1 at 1:1, scale at 2:1, 1:2): the OD API default; "
        "off, as 11% of synthetic objects got no anchor at IoU 0.5.")
    base_anchor_height: float = opt(1.0, "Base anchor height before scaling.")
    base_anchor_width: float = opt(1.0, "Base anchor width before scaling.")


@dataclass(frozen=True)
class BoxCoderConfig:
    y_scale: float = opt(10.0, "faster_rcnn_box_coder y_scale.")
    x_scale: float = opt(10.0, "faster_rcnn_box_coder x_scale.")
    height_scale: float = opt(5.0, "faster_rcnn_box_coder height_scale.")
    width_scale: float = opt(5.0, "faster_rcnn_box_coder width_scale.")


@dataclass(frozen=True)
class ModelConfig:
    labels: typing.List[str] = opt(None, "Class names, in label-map id order (id 1 first).",
                                   lambda: ["circle", "square", "triangle"])
    input_height: int = opt(192, "Model input height in pixels (fixed_shape_resizer.height).")
    input_width: int = opt(224, "Model input width in pixels (fixed_shape_resizer.width).")
    resize: str = opt("bilinear", "Stretch to the input: bilinear (half-pixel centres) | bilinear_tf1 "
                      "(the OD API's TF1 resize; import-checkpoint sets it).")
    feature_extractor: str = opt(
        "ssd_mobilenet_v2_keras", "Backbone (OD API feature_extractor.type): ssd_mobilenet_v2_keras | "
        "ssd_mobiledet_edgetpu.")
    use_depthwise: bool = opt(
        False, "SSDLite: depthwise-separable extra layers and box predictor (OD API use_depthwise).")
    depth_multiplier: float = opt(0.5, "Backbone width multiplier (MobileNetV2 alpha, MobileDet filter scale).")
    min_depth: int = opt(16, "Smallest channel count of any feature layer.")
    backbone_weights: str = opt("none", "Backbone initialisation: none | imagenet (downloads via Keras).")
    anchors: AnchorConfig = opt(None, "ssd_anchor_generator settings.", AnchorConfig)
    box_coder: BoxCoderConfig = opt(None, "faster_rcnn_box_coder settings.", BoxCoderConfig)
    box_predictor_kernel_size: int = opt(1, "convolutional_box_predictor kernel_size.")
    class_prediction_bias_init: float = opt(-4.6, "Initial class logit bias (prior ~1%).")
    l2_weight: float = opt(0.00004, "L2 regularizer weight on conv kernels.")
    batch_norm_decay: float = opt(0.97, "Batch-norm moving average decay.")
    batch_norm_epsilon: float = opt(0.001, "Batch-norm epsilon.")
    score_converter: str = opt("sigmoid", "Logit -> score: sigmoid | softmax.")


@dataclass(frozen=True)
class SynthConfig:
    train: int = opt(2000, "Synthetic training images.")
    eval: int = opt(200, "Synthetic eval images.")
    height: int = opt(240, "Synthetic image height.")
    width: int = opt(280, "Synthetic image width.")
    seed: int = opt(0, "Random seed of the synthetic set.")


@dataclass(frozen=True)
class DataConfig:
    format: str = opt("tfrecord", "Data format: tfrecord (OD API) | coco.")
    train: str = opt("data/synth/train.tfrecord", "Training TFRecord (or COCO annotations JSON).")
    eval: str = opt("data/synth/eval.tfrecord", "Eval TFRecord (or COCO annotations JSON).")
    train_images: str = opt("", "COCO only: folder of training images.")
    eval_images: str = opt("", "COCO only: folder of eval images.")
    label_map: str = opt("data/synth/label_map.pbtxt", "OD API label_map.pbtxt.")
    skip_bad: bool = opt(False, "Skip corrupt records instead of stopping; the count is reported.")
    cache: bool = opt(True, "Cache decoded images in memory when the data set fits.")
    shuffle_buffer: int = opt(1000, "Shuffle buffer size, in examples.")
    max_boxes: int = opt(100, "Most boxes per image (max_number_of_boxes).")
    synth: SynthConfig = opt(None, "What `edgedet-train synth` writes by default.", SynthConfig)


@dataclass(frozen=True)
class RandomCropConfig:
    enabled: bool = opt(True, "Apply random_crop_image.")
    min_object_covered: float = opt(0.0, "Least fraction of some box the crop must cover.")
    min_aspect_ratio: float = opt(0.75, "Smallest crop aspect ratio (width/height).")
    max_aspect_ratio: float = opt(3.0, "Largest crop aspect ratio.")
    min_area: float = opt(0.75, "Smallest crop area, as a fraction of the image.")
    max_area: float = opt(1.0, "Largest crop area.")
    overlap_thresh: float = opt(0.0, "Boxes overlapping the crop less than this are dropped.")
    clip_boxes: bool = opt(True, "Clip the kept boxes to the crop.")
    random_coef: float = opt(0.0, "Chance of keeping the whole image instead of cropping.")


@dataclass(frozen=True)
class CropOperation:
    min_object_covered: float = opt(0.0, "Least fraction of some box the crop must cover.")
    min_aspect_ratio: float = opt(0.5, "Smallest crop aspect ratio (width/height).")
    max_aspect_ratio: float = opt(2.0, "Largest crop aspect ratio.")
    min_area: float = opt(0.1, "Smallest crop area, as a fraction of the image.")
    max_area: float = opt(1.0, "Largest crop area.")
    overlap_thresh: float = opt(0.0, "Boxes overlapping the crop less than this are dropped.")
    clip_boxes: bool = opt(True, "Clip the kept boxes to the crop.")
    random_coef: float = opt(0.15, "Chance of keeping the whole image instead of cropping.")


def _ssd_crop_operations():
    # The OD API's ssd_random_crop defaults (the SSD paper's): seven IoU levels.
    return [CropOperation(min_object_covered=v, overlap_thresh=v)
            for v in (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)]


@dataclass(frozen=True)
class SsdRandomCropConfig:
    enabled: bool = opt(False, "Apply ssd_random_crop: one of the operations, drawn uniformly.")
    operations: typing.List[CropOperation] = opt(
        None, "The crop operations; default: the OD API's seven.", _ssd_crop_operations)


@dataclass(frozen=True)
class DeltaConfig:
    enabled: bool = opt(False, "Apply this step.")
    max_delta: float = opt(0.2, "Largest change, drawn from [-max_delta, max_delta].")


@dataclass(frozen=True)
class FactorConfig:
    enabled: bool = opt(False, "Apply this step.")
    min_delta: float = opt(0.8, "Smallest factor.")
    max_delta: float = opt(1.25, "Largest factor.")


@dataclass(frozen=True)
class DistortColorConfig:
    enabled: bool = opt(False, "Apply random_distort_color.")
    color_ordering: int = opt(
        0, "0: brightness, saturation, hue, contrast; 1: brightness, contrast, saturation, hue.")


@dataclass(frozen=True)
class RgbToGrayConfig:
    enabled: bool = opt(False, "Apply random_rgb_to_gray.")
    probability: float = opt(0.1, "Chance of a grey image.")


@dataclass(frozen=True)
class BlackPatchesConfig:
    enabled: bool = opt(False, "Apply random_black_patches.")
    max_black_patches: int = opt(10, "Squares that may be drawn.")
    probability: float = opt(0.5, "Chance of each square.")
    size_to_image_ratio: float = opt(0.1, "Square side as a fraction of the shorter image side.")


@dataclass(frozen=True)
class QuantizationConfig:
    enabled: bool = opt(True, "Continue quantization-aware (tfmot) after `delay` float steps.")
    delay: int = opt(4000, "Float steps before quantization-aware training starts.")


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = opt(8, "Global batch size (split across replicas).")
    steps: int = opt(5000, "Total training steps, float plus quantization-aware.")
    learning_rate_base: float = opt(0.06, "Peak learning rate of the cosine schedule.")
    warmup_learning_rate: float = opt(0.01, "Learning rate at step 0.")
    warmup_steps: int = opt(300, "Linear warmup steps.")
    momentum: float = opt(0.9, "Momentum of the SGD optimizer.")
    qat_learning_rate_scale: float = opt(0.1, "Learning rate factor during quantization-aware steps.")
    fine_tune_learning_rate: float = opt(
        0.0001, "Rate of `edgedet-train finetune`, constant after its warmup (no QAT factor).")
    fine_tune_warmup_steps: int = opt(50, "`finetune`'s linear warmup from 0 to fine_tune_learning_rate.")
    fine_tune_freeze_batchnorm: bool = opt(
        True, "`finetune` keeps the start's batch-norm statistics, scales and offsets (OD API freeze_batchnorm).")
    horizontal_flip: bool = opt(True, "Apply random_horizontal_flip.")
    random_crop: RandomCropConfig = opt(None, "random_crop_image settings.", RandomCropConfig)
    vertical_flip: bool = opt(False, "Apply random_vertical_flip (probability 0.5).")
    rotation90: bool = opt(False, "Apply random_rotation90: 90 degrees counter-clockwise, probability 0.5.")
    ssd_random_crop: SsdRandomCropConfig = opt(None, "ssd_random_crop settings.", SsdRandomCropConfig)
    adjust_brightness: DeltaConfig = opt(
        None, "random_adjust_brightness; max_delta is a fraction of 255.", DeltaConfig)
    adjust_contrast: FactorConfig = opt(None, "random_adjust_contrast factor range.", FactorConfig)
    adjust_hue: DeltaConfig = opt(None, "random_adjust_hue; max_delta is a fraction of the hue circle.",
                                  lambda: DeltaConfig(max_delta=0.02))
    adjust_saturation: FactorConfig = opt(None, "random_adjust_saturation factor range.", FactorConfig)
    distort_color: DistortColorConfig = opt(None, "random_distort_color settings.", DistortColorConfig)
    rgb_to_gray: RgbToGrayConfig = opt(None, "random_rgb_to_gray settings.", RgbToGrayConfig)
    black_patches: BlackPatchesConfig = opt(None, "random_black_patches settings.", BlackPatchesConfig)
    matched_threshold: float = opt(0.5, "argmax_matcher matched_threshold (IoU).")
    unmatched_threshold: float = opt(0.5, "argmax_matcher unmatched_threshold (IoU).")
    force_match_for_each_row: bool = opt(True, "Every ground-truth box gets its best anchor.")
    focal_alpha: float = opt(0.75, "weighted_sigmoid_focal alpha.")
    focal_gamma: float = opt(2.0, "weighted_sigmoid_focal gamma.")
    smooth_l1_delta: float = opt(1.0, "weighted_smooth_l1 delta.")
    classification_weight: float = opt(1.0, "Weight of the classification loss.")
    localization_weight: float = opt(1.0, "Weight of the localization loss.")
    quantization: QuantizationConfig = opt(None, "Quantization-aware training.", QuantizationConfig)
    checkpoint_every: int = opt(500, "Steps between checkpoints.")
    log_every: int = opt(50, "Steps between TensorBoard scalar writes.")
    eval_every: int = opt(1000, "Steps between eval mAP runs; 0 = only at the end.")
    seed: int = opt(0, "Random seed.")


@dataclass(frozen=True)
class EvalConfig:
    max_images: int = opt(0, "Evaluate on at most this many eval images; 0 = all.")
    score_threshold: float = opt(0.01, "Score threshold for mAP evaluation (low, so the PR curve is full).")
    max_detections: int = opt(100, "Detections per image kept for mAP evaluation.")


@dataclass(frozen=True)
class ExportConfig:
    max_drop: float = opt(0.02, "Largest allowed relative COCO mAP drop of int8 vs float.")
    calibration_images: int = opt(200, "Eval images used as the representative data set (>= 100).")
    with_postprocess: bool = opt(False, "Also write model_int8_postprocess.tflite (TFLite_Detection_PostProcess).")


@dataclass(frozen=True)
class DistributeConfig:
    peer_timeout_s: float = opt(
        300.0, "Multi-worker: seconds one call of up to 10 train steps may take before this worker "
        "decides a peer is stuck and exits 1; keep it several times a normal call.")
    startup_timeout_s: float = opt(
        1800.0, "Multi-worker: the same bound for the slow calls: a phase's first (tracing, "
        "compiling), evaluation and checkpoints.")
    join_timeout_s: float = opt(
        600.0, "Multi-worker: seconds to wait at start for every worker of TF_CONFIG to join the "
        "cluster before this one exits 1.")
    cpu_replicas: str = opt(
        "auto", "CPU-only host: replicas each batch is split over, each on its share of the cores "
        "(batch-norm statistics per replica, as on GPUs); auto = up to one per core, at least 4 "
        "images each, in runs of at least 2000 float steps; 1 = one replica.")


# OD API preprocessing step -> the train key that enables it, in the order training applies them
# (geometric steps first, then colour; training/data/augment.py).
AUGMENTATIONS = (
    ("random_horizontal_flip", "horizontal_flip"),
    ("random_vertical_flip", "vertical_flip"),
    ("random_rotation90", "rotation90"),
    ("random_crop_image", "random_crop.enabled"),
    ("ssd_random_crop", "ssd_random_crop.enabled"),
    ("random_adjust_brightness", "adjust_brightness.enabled"),
    ("random_adjust_contrast", "adjust_contrast.enabled"),
    ("random_adjust_hue", "adjust_hue.enabled"),
    ("random_adjust_saturation", "adjust_saturation.enabled"),
    ("random_distort_color", "distort_color.enabled"),
    ("random_rgb_to_gray", "rgb_to_gray.enabled"),
    ("random_black_patches", "black_patches.enabled"),
)

TRAINING_SECTIONS = {
    "model": ModelConfig,
    "data": DataConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "export": ExportConfig,
    "distribute": DistributeConfig,
}


@dataclass(frozen=True)
class Config:
    """The whole config.yaml."""
    model: ModelConfig
    data: DataConfig
    train: TrainConfig
    eval: EvalConfig
    export: ExportConfig
    distribute: DistributeConfig
    app: app_config.AppConfig
    postprocess: app_config.PostprocessConfig
    reference: app_config.ReferenceConfig
    http: app_config.HttpConfig
    objects: app_config.ObjectsConfig
    mqtt: app_config.MqttConfig
    snapshots: app_config.SnapshotsConfig
    clips: app_config.ClipsConfig


def load_config(path=None):
    """Loads and validates the whole config.yaml; None gives all defaults."""
    data = app_config.read_yaml(path) if path else {}
    sections = dict(TRAINING_SECTIONS, **app_config.APP_SECTIONS)
    return Config(**app_config.build_sections(data, sections, path or "<defaults>"))


def to_dict(cfg):
    """A config (or section) as plain dicts, for checkpoints and model.json."""
    import dataclasses
    return dataclasses.asdict(cfg)


def render_config(cfg=None):
    """The whole config as commented YAML (`python -m training.config > config.yaml`)."""
    sections = dict(TRAINING_SECTIONS, **app_config.APP_SECTIONS)
    values = None if cfg is None else {k: getattr(cfg, k) for k in sections}
    return app_config.render_yaml(sections, values)


if __name__ == "__main__":
    print("# edgedet configuration. Every key is optional; the value shown is the default.\n"
          "# Regenerate the defaults with: python -m training.config > config.yaml\n")
    print(render_config())
