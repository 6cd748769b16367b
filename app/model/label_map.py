"""OD API `label_map.pbtxt` files: `item { id: 1 name: 'circle' display_name: 'circle' }`.

The one reader of this format in edgedet (training/data/label_map.py uses it too). The
device has no protobuf, so this is a small parser of protobuf text format restricted to
the OD API's `StringIntLabelMap` message: every field of that proto (keypoints,
ancestor_ids, frequency, ...) is accepted, an unknown one is an error naming file:line:col.
Ids are 1-based here, as in the file; the rest of edgedet uses 0-based class ids (`id - 1`).
"""

import os
import re

from app.errors import UserError
from app.textfile import read_text

EXAMPLE = "item { id: 1 name: 'circle' }"

_KEYPOINT = {"id": "int", "label": "string"}
_ITEM = {"name": "string", "id": "int", "display_name": "string", "keypoints": _KEYPOINT,
         "ancestor_ids": "int", "descendant_ids": "int", "frequency": "enum", "instance_count": "int"}
_REPEATED = ("item", "keypoints", "ancestor_ids", "descendant_ids")
_ENUMS = ("UNSPECIFIED", "FREQUENT", "COMMON", "RARE")  # LVISFrequency
# Skipped: whitespace and # comments. Tokens: names, numbers, quoted strings, punctuation.
_TOKEN = re.compile(r"\s+|#[^\n]*|(?P<tok>[A-Za-z_]\w*|[-+]?\d[\w.+-]*"
                    r"""|'(?:[^'\\\n]|\\.)*'|"(?:[^"\\\n]|\\.)*"|[{}<>:\[\],;])""")
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r"}


class _Error(Exception):
    """A syntax error at token `position` (line and column are computed for the message)."""

    def __init__(self, position, reason):
        Exception.__init__(self, reason)
        self.position, self.reason = position, reason


def _tokens(text):
    """[(token text, offset)]; _Error at the first character that starts no token."""
    tokens, offset = [], 0
    while offset < len(text):
        match = _TOKEN.match(text, offset)
        if match is None:
            raise _Error(offset, "unexpected character {!r}".format(text[offset]))
        if match.group("tok"):
            tokens.append((match.group("tok"), offset))
        offset = match.end()
    tokens.append(("", len(text)))
    return tokens


class _Parser(object):
    """Recursive descent over the tokens of one file; `message` reads one message's fields."""

    def __init__(self, text):
        self.tokens, self.at = _tokens(text), 0

    def peek(self):
        return self.tokens[self.at][0]

    def take(self):
        self.at += 1
        return self.tokens[self.at - 1]

    def message(self, schema, closing):
        """Fields until `closing` ("" = end of file) -> {field: value or [values]}."""
        fields = {}
        while self.peek() != closing:
            name, where = self.take()
            if not name:
                raise _Error(where, "the file ends before a closing {!r}".format(closing))
            if name not in schema:
                raise _Error(where, "no field named {!r}".format(name))
            if self.peek() == ":":
                self.take()
            for value in self.values(schema[name], where):
                if name not in _REPEATED and name in fields:
                    raise _Error(where, "{!r} given twice in one item".format(name))
                fields.setdefault(name, []).append(value)
            if self.peek() in (",", ";"):
                self.take()
        self.take()
        return {k: v if k in _REPEATED else v[0] for k, v in fields.items()}

    def values(self, kind, where):
        if isinstance(kind, dict):
            opening, _ = self.take()
            if opening not in ("{", "<"):
                raise _Error(where, "expected '{' after the field name")
            return [self.message(kind, "}" if opening == "{" else ">")]
        if self.peek() != "[":
            return [self.scalar(kind)]
        self.take()
        items = []
        while self.peek() != "]":
            items.append(self.scalar(kind))
            if self.peek() == ",":
                self.take()
        self.take()
        return items

    def scalar(self, kind):
        token, where = self.take()
        if kind == "string" and token[:1] in ("'", '"'):
            return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), token[1:-1])
        if kind == "int" and re.match(r"^[-+]?\d+$", token):
            return int(token)
        if kind == "enum" and token in _ENUMS:
            return token
        raise _Error(where, "expected a{} value, got {!r}".format(
            {"string": " quoted string", "int": "n integer", "enum": " frequency (" + "|".join(_ENUMS) + ")"}[kind],
            token or "end of file"))


def parse_label_map(text, path="label map"):
    """Parses label_map.pbtxt text.

    Args:
      text: the file content.
      path: file name, for messages.

    Returns:
      dict {id (int, 1-based): name (str)}; `name`, or `display_name` where `name` is empty.

    Raises:
      UserError: a syntax error or unknown field (file:line:col), an item without an id >= 1
        or a name, a repeated id, or no items.
    """
    try:
        root = _Parser(text).message({"item": _ITEM}, "")
    except _Error as e:
        line = text.count("\n", 0, e.position) + 1
        column = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        raise UserError("label map {}:{}:{}: {}; expected items like {}".format(
            path, line, column, e.reason, EXAMPLE))
    return _items_to_dict(root.get("item", []), path)


def _items_to_dict(items, path):
    if not items:
        raise UserError("label map {} has no items; add one per class, like {}".format(path, EXAMPLE))
    labels = {}
    for number, item in enumerate(items, start=1):
        name, item_id = item.get("name") or item.get("display_name"), item.get("id")
        if item_id is None or item_id < 1 or not name:
            raise UserError("label map {}: item #{} needs an id >= 1 and a name (got id {}, name {!r}); "
                            "write it like {}".format(path, number, item_id, name, EXAMPLE))
        if item_id in labels:
            raise UserError("label map {}: id {} appears twice (items '{}' and '{}'); give every class "
                            "its own id".format(path, item_id, labels[item_id], name))
        labels[item_id] = name
    return labels


def looks_like_label_map(text):
    """True if the text starts (after comments) like a label_map.pbtxt: `item {` or `item <`."""
    return re.match(r"^(?:\s|#[^\n]*)*item\s*:?\s*[{<]", text) is not None


def read_label_map(path):
    """Reads a label_map.pbtxt: {id (int, 1-based): name}; UserError as `parse_label_map`, or missing."""
    path = os.fspath(path) if hasattr(os, "fspath") else str(path)
    if not os.path.isfile(path):
        raise UserError("label map {} does not exist; pass the label_map.pbtxt that belongs to the "
                        "data (config data.label_map), e.g. as written by `edgedet-train synth`".format(path))
    return parse_label_map(read_text(path, "label map", "Pass the label_map.pbtxt of the data (config data.label_map)."),
                           path)


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
