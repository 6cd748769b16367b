"""The TFLite_Detection_PostProcess options inside an OD API TFLite SavedModel: read and rewrite.

`export_tflite_graph_tf2.py` bakes the op's settings into the SavedModel, as the
`_implements` attribute (a NameAttrList "TFLite_Detection_PostProcess") of the placeholder
function that the TFLite converter replaces by the op. With the exporter's defaults that is
fast NMS (`use_regular_nms: false`, one class per box, class-agnostic suppression) and
`max_detections: 10`, not the per-class NMS of the pipeline's `post_processing` that the OD
API's own model applies. On the fixture's real export, fast NMS dropped 21 of 156 OD API
detections at score >= 0.4: a second class the OD API keeps on the same object.
`from_pipeline` gives the options of the pipeline's post-processing and `rewrite` sets them
in a copy of saved_model.pb, so the converted model keeps the OD API's post-processing
without a re-export.
"""

import os

from app.errors import UserError

OP_NAME = "TFLite_Detection_PostProcess"
SAVED_MODEL_FILE = "saved_model.pb"


def _load(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, SAVED_MODEL_FILE), "rb") as f:
        proto.ParseFromString(f.read())
    return proto


def _op_functions(proto):
    """The FunctionDefs whose `_implements` names the op (the exporter traces it more than once)."""
    return [fn for graph in proto.meta_graphs for fn in graph.graph_def.library.function
            if "_implements" in fn.attr and fn.attr["_implements"].func.name == OP_NAME]


def _plain(value):
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind in ("i", "f", "b") else None


def read_options(saved_model_dir):
    """The op's options, e.g. {"max_detections": 10, "use_regular_nms": False, ...}.

    Args:
      saved_model_dir: a SavedModel folder (saved_model.pb inside).

    Returns:
      dict {attribute name: int, float or bool}; empty when no function implements the op.
    """
    functions = _op_functions(_load(saved_model_dir))
    if not functions:
        return {}
    return {key: _plain(value) for key, value in functions[0].attr["_implements"].func.attr.items()}


def rewrite(saved_model_dir, options):
    """Sets op options in place in `saved_model_dir`/saved_model.pb (pass a copy).

    Args:
      saved_model_dir: a SavedModel folder that the caller owns (e.g. a staged copy).
      options: {attribute name: int, float or bool}; each replaces or adds that attribute.

    Raises:
      UserError: no function in the SavedModel implements TFLite_Detection_PostProcess.
    """
    proto = _load(saved_model_dir)
    functions = _op_functions(proto)
    if not functions:
        raise UserError("{}: no function implements {}; pass the SavedModel export_tflite_graph_tf2.py "
                        "wrote".format(saved_model_dir, OP_NAME))
    for fn in functions:
        attrs = fn.attr["_implements"].func.attr
        for key, value in options.items():
            kind = "b" if isinstance(value, bool) else "i" if isinstance(value, int) else "f"
            attrs[key].Clear()
            setattr(attrs[key], kind, value)
    path = os.path.join(saved_model_dir, SAVED_MODEL_FILE)
    temp = path + ".tmp"
    with open(temp, "wb") as f:
        f.write(proto.SerializeToString())
    os.replace(temp, path)


def read_ssd(path):
    """The `model.ssd` message of a pipeline.config (UserError when it cannot be read or parsed)."""
    from app.textfile import read_text
    from training.odapi_proto import parse_pipeline
    text = read_text(path, "pipeline.config", "Pass the pipeline.config the model was exported from.")
    model = parse_pipeline(text, path).model
    if not model.HasField("ssd"):
        raise UserError("--pipeline {}: no model.ssd section; pass the pipeline.config the model was exported "
                        "from".format(path))
    return model.ssd


def from_pipeline(path, num_classes, ssd=None):
    """Op options equal to a pipeline.config's `post_processing.batch_non_max_suppression`.

    Per-class NMS (`use_regular_nms`) unless the pipeline asks for class-agnostic NMS;
    `max_total_detections` becomes the op's `max_detections`.

    Args:
      path: the OD API pipeline.config the SavedModel was exported from.
      num_classes: the op's num_classes (checked against the pipeline's).
      ssd: read_ssd(path), when the caller already read it.

    Returns:
      dict {attribute name: value} for `rewrite`.

    Raises:
      UserError: the file cannot be read or parsed, or it is not the model's pipeline.
    """
    ssd = ssd if ssd is not None else read_ssd(path)
    if ssd.num_classes != num_classes:
        raise UserError("--pipeline {}: model.ssd.num_classes is {}, the SavedModel's post-processing has {}; "
                        "pass the pipeline.config it was exported from".format(path, ssd.num_classes, num_classes))
    nms = ssd.post_processing.batch_non_max_suppression
    options = {"max_detections": int(nms.max_total_detections), "nms_iou_threshold": float(nms.iou_threshold),
               "nms_score_threshold": float(nms.score_threshold), "use_regular_nms": not nms.use_class_agnostic_nms}
    if nms.use_class_agnostic_nms:
        options["max_classes_per_detection"] = int(nms.max_classes_per_detection)
    else:
        options["detections_per_class"] = int(nms.max_detections_per_class)
    return options
