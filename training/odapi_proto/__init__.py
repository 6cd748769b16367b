"""OD API pipeline.config (protobuf text format) -> a protobuf message, with no OD API install.

The schema is `odapi_subset.pbtxt`: every message of the OD API's pipeline.proto as a
FileDescriptorProto in text format (scripts/odapi_schema.py writes it), loaded with
`google.protobuf.text_format` into a private DescriptorPool. Parsing is strict: a field the
OD API does not define is an error with its line and column, never silently skipped.
"""

import functools
import os
import re

from app.errors import UserError

SCHEMA_PATH = os.path.join(os.path.dirname(__file__), "odapi_subset.pbtxt")
PACKAGE = "object_detection.protos"

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
      A TrainEvalPipelineConfig message of the OD API schema.

    Raises:
      UserError: a syntax error, a wrong value, or a field the OD API does not define,
        naming path:line:col and the field.
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
    return ("{}: field '{}' of {} is not defined by the OD API's pipeline.config schema "
            "(training/odapi_proto/odapi_subset.pbtxt). Check its spelling, or remove it."
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
