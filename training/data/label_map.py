"""OD API `label_map.pbtxt` files: `item { id: 1 name: 'circle' display_name: 'circle' }`.

Parsed with protobuf's own text-format parser against the OD API's `StringIntLabelMap`
schema (declared here, since the object_detection package is not installed; Model Garden's
label-map decoder reads only CSV). Ids are 1-based here, as in the file; the rest of edgedet
uses 0-based class ids (`id - 1`).
"""

import os

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, text_format

from app.errors import UserError
from app.textfile import read_text

_EXAMPLE = "item { id: 1 name: 'circle' }"


def _label_map_class():
    """The StringIntLabelMap message class (field numbers as in the OD API's proto)."""
    fd = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(
        name="edgedet/string_int_label_map.proto", package="edgedet", syntax="proto2")
    frequency = proto.enum_type.add(name="LVISFrequency")
    for number, name in enumerate(["UNSPECIFIED", "FREQUENT", "COMMON", "RARE"]):
        frequency.value.add(name=name, number=number)
    keypoint = proto.message_type.add(name="KeypointMap")
    keypoint.field.add(name="id", number=1, type=fd.TYPE_INT32, label=fd.LABEL_OPTIONAL)
    keypoint.field.add(name="label", number=2, type=fd.TYPE_STRING, label=fd.LABEL_OPTIONAL)
    item = proto.message_type.add(name="StringIntLabelMapItem")
    for name, number, kind, label, type_name in [
            ("name", 1, fd.TYPE_STRING, fd.LABEL_OPTIONAL, None),
            ("id", 2, fd.TYPE_INT32, fd.LABEL_OPTIONAL, None),
            ("display_name", 3, fd.TYPE_STRING, fd.LABEL_OPTIONAL, None),
            ("keypoints", 4, fd.TYPE_MESSAGE, fd.LABEL_REPEATED, ".edgedet.KeypointMap"),
            ("ancestor_ids", 5, fd.TYPE_INT32, fd.LABEL_REPEATED, None),
            ("descendant_ids", 6, fd.TYPE_INT32, fd.LABEL_REPEATED, None),
            ("frequency", 7, fd.TYPE_ENUM, fd.LABEL_OPTIONAL, ".edgedet.LVISFrequency"),
            ("instance_count", 8, fd.TYPE_INT32, fd.LABEL_OPTIONAL, None)]:
        field = item.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            field.type_name = type_name
    root = proto.message_type.add(name="StringIntLabelMap")
    root.field.add(name="item", number=1, type=fd.TYPE_MESSAGE, label=fd.LABEL_REPEATED,
                   type_name=".edgedet.StringIntLabelMapItem")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName("edgedet.StringIntLabelMap"))


_LabelMap = _label_map_class()


def read_label_map(path):
    """Reads a label_map.pbtxt.

    Args:
      path: file path.

    Returns:
      dict {id (int, 1-based): name (str)}; `name`, or `display_name` where `name` is empty.

    Raises:
      UserError: the file is missing or malformed, an item lacks an id or a name, an id is
        below 1 or repeated, or there are no items. The message names the file and line or item.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise UserError("label map {} does not exist; pass the label_map.pbtxt that belongs to the "
                        "data (config data.label_map), e.g. as written by `edgedet-train synth`".format(path))
    text = read_text(path, "label map", "Pass the label_map.pbtxt of the data (config data.label_map).")
    message = _LabelMap()
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as e:
        raise UserError("label map {}:{}:{}: {}; expected items like {}".format(
            path, e.GetLine(), e.GetColumn(), _reason(e), _EXAMPLE)) from None
    return _items_to_dict(message, path)


def _reason(error):
    """The ParseError text without its own 'line:col :' prefix (we print file:line:col)."""
    text = str(error)
    return text.split(" : ", 1)[1] if " : " in text else text


def _items_to_dict(message, path):
    if not message.item:
        raise UserError("label map {} has no items; add one per class, like {}".format(path, _EXAMPLE))
    labels = {}
    for number, item in enumerate(message.item, start=1):
        name = item.name or item.display_name
        if not item.HasField("id") or item.id < 1 or not name:
            raise UserError("label map {}: item #{} needs an id >= 1 and a name (got id {}, name {!r}); "
                            "write it like {}".format(path, number, item.id if item.HasField("id") else None,
                                                      name, _EXAMPLE))
        if item.id in labels:
            raise UserError("label map {}: id {} appears twice (items '{}' and '{}'); give every class "
                            "its own id".format(path, item.id, labels[item.id], name))
        labels[item.id] = name
    return labels


def write_label_map(path, names):
    """Writes names as ids 1..N (name and display_name), atomically.

    Args:
      path: destination file path.
      names: class names in id order (names[0] gets id 1).
    """
    names = list(names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError("expected a non-empty list of non-empty names, got {!r}".format(names))
    message = _LabelMap()
    for index, name in enumerate(names, start=1):
        message.item.add(id=index, name=name, display_name=name)
    path = os.fspath(path)
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(text_format.MessageToString(message))
    os.replace(temp, path)


def label_names(label_map, path="label map"):
    """Class names in 0-based class-id order from a {1-based id: name} dict.

    Raises:
      UserError: the ids are not exactly 1..N (edgedet needs contiguous ids).
    """
    ids = sorted(label_map)
    if ids != list(range(1, len(ids) + 1)):
        raise UserError("{}: ids must be 1..{} without gaps, got {}; renumber the items".format(
            path, len(ids), ids))
    return [label_map[i] for i in ids]
