"""OD API `ssd_mobilenet_v2_keras` checkpoint variables -> edgedet's SSD model, by structure and shape.

A TF2 OD API checkpoint (`model_main_tf2.py`) names its variables by object path:
  model/_feature_extractor/classification_backbone/layer_with_weights-<i>/<attr>
      the i-th MobileNetV2 layer that has weights, in the Keras model's layer order,
      which edgedet's backbone shares (both are built by keras.applications.MobileNetV2);
  model/_feature_extractor/feature_map_generator/convolutions/<map>/<j>/<attr>
      the extra feature layers of map >= 2: conv 1x1, BN, conv 3x3 stride 2, BN, in j order;
  model/_box_predictor/_prediction_heads/{box_encodings,class_predictions_with_background}/<map>/...
      the per-map box and class head convs (kernel, bias).
Every entry is either loaded into exactly one edgedet variable (shapes checked), or skipped
with a reason; anything else is an error that names it. The OD API class head predicts a
background column first for each anchor ([A, 1 + C] per location); edgedet's has none, and
sigmoid scores of the C classes do not depend on it, so that column is dropped exactly.
"""

import collections
import re

import numpy as np

from app.errors import UserError
from training import model as ssd_model

SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
BACKBONE = "model/_feature_extractor/classification_backbone/layer_with_weights-{}/{}"
EXTRA = "model/_feature_extractor/feature_map_generator/convolutions/{}/"
BOX_HEAD = "model/_box_predictor/_prediction_heads/box_encodings/{}/_box_encoder_layers/0/{}"
CLASS_HEAD = ("model/_box_predictor/_prediction_heads/class_predictions_with_background/{}/"
              "_class_predictor_layers/0/{}")
# Entries that are deliberately not loaded: (pattern, reason).
SKIPPED = (
    (re.compile(r".*/\.OPTIMIZER_SLOT/.*"), "optimizer slot (momentum); fine-tuning starts a fresh optimizer"),
    (re.compile(r"optimizer/.*"), "optimizer state (iterations, decay, momentum hyperparameter)"),
    (re.compile(r"step$"), "the OD API's global step counter; edgedet keeps the step in state.json"),
    (re.compile(r"save_counter$"), "checkpoint save counter"),
    (re.compile(r"_CHECKPOINTABLE_OBJECT_GRAPH$"), "the checkpoint's object-graph metadata"),
)
BACKGROUND_REASON = "background column of the class head (edgedet predicts no background class)"

# One checkpoint entry -> one edgedet variable; `take` maps the stored array onto its shape.
Assignment = collections.namedtuple("Assignment", "key variable take")
Plan = collections.namedtuple("Plan", "assignments skipped")


def read_entries(checkpoint):
    """{entry name without SUFFIX: shape tuple} of a checkpoint prefix (tf.train.list_variables)."""
    import tensorflow as tf
    try:
        listed = tf.train.list_variables(checkpoint)
    except (tf.errors.OpError, ValueError) as e:
        raise UserError("{}: not a readable TensorFlow checkpoint ({}). Pass the ckpt-N prefix or "
                        "its folder.".format(checkpoint, str(e).splitlines()[0][:200]))
    return {name[:-len(SUFFIX)] if name.endswith(SUFFIX) else name: tuple(shape)
            for name, shape in listed}


def _attr(variable):
    """'block_1_expand/kernel:0' -> 'kernel' (the OD API uses the same attribute names)."""
    return variable.name.split("/")[-1].split(":")[0]


def _layer_assignments(layer, key_of):
    return [Assignment(key_of(_attr(v)), v, None) for v in layer.weights]


def _backbone_layers(model, model_cfg):
    """edgedet's MobileNetV2 layers with weights, in model order (extra layers and heads excluded)."""
    own = {name + suffix for convs in ssd_model.extra_layers(model_cfg) for name, _, _, _ in convs
           for suffix in ("", "_BN")}
    own.update(n for i in range(model_cfg.anchors.num_layers) for n in ssd_model.predictor_names(i))
    return [layer for layer in model.layers if layer.weights and layer.name not in own]


def _backbone(model, model_cfg):
    out = []
    for i, layer in enumerate(_backbone_layers(model, model_cfg)):
        out += _layer_assignments(layer, lambda attr, i=i: BACKBONE.format(i, attr))
    return out


def _extra(model, model_cfg, entries):
    """Extra feature layers: the OD API's j-ordered layers with weights of each map, zipped with edgedet's."""
    out = []
    for m, convs in enumerate(ssd_model.extra_layers(model_cfg), start=len(ssd_model.BACKBONE_FEATURES)):
        prefix = EXTRA.format(m)
        indices = sorted({int(k[len(prefix):].split("/")[0]) for k in entries if k.startswith(prefix)})
        layers = [model.get_layer(n + s) for n, _, _, _ in convs for s in ("", "_BN")]
        for j, layer in zip(indices, layers):
            out += _layer_assignments(layer, lambda attr, j=j: "{}{}/{}".format(prefix, j, attr))
    return out


def _drop_background(num_classes):
    """[..., A * (1 + C)] -> [..., A * C]: drops column 0 of every anchor."""
    def take(value):
        per_anchor = value.reshape(value.shape[:-1] + (-1, num_classes + 1))
        return np.ascontiguousarray(per_anchor[..., 1:]).reshape(value.shape[:-1] + (-1,))
    return take


def _heads(model, model_cfg, entries):
    out, skipped, num_classes = [], [], len(model_cfg.labels)
    for i in range(model_cfg.anchors.num_layers):
        box_name, class_name = ssd_model.predictor_names(i)
        out += _layer_assignments(model.get_layer(box_name), lambda attr, i=i: BOX_HEAD.format(i, attr))
        for v in model.get_layer(class_name).weights:
            key = CLASS_HEAD.format(i, _attr(v))
            stored = entries.get(key, ())
            with_background = stored and stored[-1] == v.shape[-1] // num_classes * (num_classes + 1)
            out.append(Assignment(key, v, _drop_background(num_classes) if with_background else None))
            if with_background:
                skipped.append((key, BACKGROUND_REASON))
    return out, skipped


def _skip_reason(key):
    for pattern, reason in SKIPPED:
        if pattern.match(key):
            return reason
    return None


def plan(model, model_cfg, entries, checkpoint="checkpoint"):
    """Matches every checkpoint entry to an edgedet variable or a reason to skip it.

    Args:
      model: keras.Model from training.model.build_ssd(model_cfg) (float, not quantized).
      model_cfg: the ModelConfig it was built from.
      entries: {name: shape} from `read_entries`.
      checkpoint: the checkpoint path, for messages.

    Returns:
      Plan(assignments: list of Assignment, one per edgedet variable; skipped: sorted list of
      (entry, reason) for entries not loaded, and for class heads whose background column
      was dropped).

    Raises:
      UserError: an edgedet variable without its entry, a shape that differs, or an entry
        that is neither loaded nor skipped (each message names the entry).
    """
    heads, partial = _heads(model, model_cfg, entries)
    assignments = _backbone(model, model_cfg) + _extra(model, model_cfg, entries) + heads
    for a in assignments:
        _check_shape(a, entries, checkpoint)
    skipped = [(k, _skip_reason(k)) for k in entries if _skip_reason(k)] + partial
    _check_all_used(entries, assignments, skipped, checkpoint)
    return Plan(assignments, sorted(skipped))


def _check_shape(assignment, entries, checkpoint):
    want = tuple(assignment.variable.shape)
    if assignment.key not in entries:
        raise UserError("{}: has no variable {} for edgedet's {} {}; the checkpoint is not the "
                        "ssd_mobilenet_v2_keras model this pipeline.config describes".format(
                            checkpoint, assignment.key, assignment.variable.name, list(want)))
    got = entries[assignment.key]
    if assignment.take is not None:
        got = assignment.take(np.zeros(got, np.float32)).shape
    if tuple(got) != want:
        raise UserError("{}: variable {} has shape {} but edgedet's {} from the pipeline.config "
                        "needs {}; the checkpoint and the pipeline.config describe different models "
                        "(check num_classes, depth_multiplier, min_depth, anchors and the input size)"
                        .format(checkpoint, assignment.key, list(entries[assignment.key]),
                                assignment.variable.name, list(want)))


def _check_all_used(entries, assignments, skipped, checkpoint):
    used = {a.key for a in assignments} | {k for k, _ in skipped}
    left = sorted(k for k in entries if k not in used)
    if left:
        raise UserError("{}: variable {} (and {} more) has no place in edgedet's SSD MobileNetV2; "
                        "the checkpoint holds layers this pipeline.config does not build"
                        .format(checkpoint, left[0], len(left) - 1))


def load(plan_, checkpoint):
    """Assigns every planned variable from the checkpoint (tf.train.load_checkpoint)."""
    import tensorflow as tf
    reader = tf.train.load_checkpoint(checkpoint)
    for a in plan_.assignments:
        value = reader.get_tensor(a.key + SUFFIX)
        a.variable.assign(a.take(value) if a.take is not None else value)
