"""OD API pipeline.config (protobuf text format) -> a protobuf message, with no OD API install.

The schema is `odapi_subset.pbtxt`: a FileDescriptorProto in text format, loaded with
`google.protobuf.text_format` into a private DescriptorPool. Parsing is strict: a field the
subset lacks is an error with its line and column, never silently skipped.
"""

import functools
import os
import re

from app.errors import UserError

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "odapi_subset.pbtxt")
PACKAGE = "object_detection.protos"

# Models that are valid OD API configs but not SSD: named in the error instead of "unknown field".
NON_SSD_MODELS = ("faster_rcnn", "center_net", "experimental_model")

_UNKNOWN_FIELD = re.compile(r'Message type "([\w.]+)" has no field named "(\w+)"')


@functools.lru_cache(maxsize=None)
def message_class(name="TrainEvalPipelineConfig"):
    """The generated message class of one schema message (e.g. "TrainEvalPipelineConfig")."""
    from google.protobuf import descriptor_pb2, message_factory, text_format
    file_proto = descriptor_pb2.FileDescriptorProto()
    with open(SCHEMA_PATH) as f:
        text_format.Parse(f.read(), file_proto)
    pool = _pool(file_proto.SerializeToString())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(PACKAGE + "." + name))


@functools.lru_cache(maxsize=None)
def _pool(serialized_file):
    # A private pool: the real OD API protos (if ever imported) live in the default pool
    # under the same names, and the two must not clash.
    from google.protobuf import descriptor_pb2, descriptor_pool
    pool = descriptor_pool.DescriptorPool()
    pool.Add(descriptor_pb2.FileDescriptorProto.FromString(serialized_file))
    return pool


def parse_pipeline(text, path):
    """Parses pipeline.config text into a TrainEvalPipelineConfig message.

    Args:
      text: the file content (protobuf text format).
      path: file name, for messages.

    Returns:
      A TrainEvalPipelineConfig message of the edgedet subset schema.

    Raises:
      UserError: a syntax error, a wrong value, or a field outside the subset, naming
        path:line:col and the field.
    """
    from google.protobuf import text_format
    msg = message_class()()
    try:
        text_format.Parse(text, msg)
    except text_format.ParseError as e:
        raise UserError(_parse_error_text(e, path))
    return msg


def _parse_error_text(err, path):
    where = "{}:{}:{}".format(path, err.GetLine(), err.GetColumn()) if err.GetLine() else path
    detail = str(err)
    detail = detail.split(" : ", 1)[1] if " : " in detail else detail  # drop the "L:C : " prefix
    match = _UNKNOWN_FIELD.search(detail)
    if match is None:
        return "{}: not a valid pipeline.config: {}. Fix the protobuf text syntax there.".format(
            where, detail)
    message, field = match.group(1).replace(PACKAGE + ".", ""), match.group(2)
    if message == "DetectionModel" and field in NON_SSD_MODELS:
        return ("{}: model.{} is not an SSD model; edgedet trains SSD MobileNetV2 only. "
                "Start from an ssd_mobilenet_v2 pipeline.config.".format(where, field))
    return ("{}: field '{}' of {} is not supported by edgedet (it is not in the OD API subset in "
            "training/odapi_proto/odapi_subset.pbtxt). Remove it, or check its spelling."
            .format(where, field, message))


def set_leaves(msg, prefix=""):
    """Every field set in `msg`, down to the leaves.

    A leaf is a scalar, one element of a repeated scalar, or a message that is set but has no
    field set inside (e.g. `iou_similarity {}`, whose presence is its meaning).

    Args:
      msg: a protobuf message.
      prefix: dotted path of `msg` itself.

    Yields:
      (path, value): path like "train_config.data_augmentation_options[1].random_crop_image.min_area",
      value the scalar, enum name (str) or None for an empty message.
    """
    for field, value in msg.ListFields():
        path = prefix + field.name
        items = list(value) if _is_repeated(field) else [value]
        for i, item in enumerate(items):
            item_path = "{}[{}]".format(path, i) if _is_repeated(field) else path
            if field.message_type is None:
                yield item_path, _scalar(field, item)
            elif item.ListFields():
                for leaf in set_leaves(item, item_path + "."):
                    yield leaf
            else:
                yield item_path, None


def _is_repeated(field):
    # FieldDescriptor.label is deprecated in newer protobuf; is_repeated replaces it.
    flag = getattr(field, "is_repeated", None)
    if flag is not None:
        return flag
    return field.label == field.LABEL_REPEATED


def _scalar(field, value):
    if field.enum_type is not None:
        return field.enum_type.values_by_number[value].name
    return value


def default_leaves(msg, prefix=""):
    """Scalar fields NOT set in `msg` (or in any message set inside it) that have an OD API default.

    The OD API reads these defaults, so an import must too: a fixed_shape_resizer with no height
    is 300 high, not edgedet's default. Fields inside a oneof and repeated fields are skipped
    (their absence has no default value).

    Yields:
      (path, default value) with paths as in `set_leaves`.
    """
    for field in msg.DESCRIPTOR.fields:
        if _is_repeated(field) or field.message_type is not None or field.containing_oneof:
            continue
        if not msg.HasField(field.name) and field.has_default_value:
            yield prefix + field.name, _scalar(field, field.default_value)
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        items = list(value) if _is_repeated(field) else [value]
        for i, item in enumerate(items):
            path = "{}{}[{}]".format(prefix, field.name, i) if _is_repeated(field) else prefix + field.name
            for leaf in default_leaves(item, path + "."):
                yield leaf
