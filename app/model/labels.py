"""Label files -> {class_id: name}, and per-class settings keyed by label name -> by class id.

Four formats are accepted, decided for the whole file so a name that happens
to start with a digit is not misread:
  * the OD API's label_map.pbtxt (`item { id: 1 name: 'circle' }`, ids 1-based; app.model.label_map);
  * Coral's "id  name" (ids may have gaps, e.g. coco_labels.txt);
  * "id: name";
  * one name per line; ids are 0-based line numbers.
Class ids are 0-based, as everywhere inside edgedet. A line with a brace cannot be a
class name: such a file is a malformed label map or not a label file at all.
"""

import re

from app.model import label_map
from app.errors import UserError
from app.textfile import read_text

_ID_LINE = re.compile(r"^\s*(\d+)\s*(?::\s*|\s+)(\S.*?)\s*$")


def _trimmed_lines(path, text):
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise UserError("{}: label file is empty. Write one class name per line.".format(path))
    return lines


def _parse_id_lines(path, matches):
    labels = {}
    for number, match in matches:
        class_id, name = int(match.group(1)), match.group(2)
        if class_id in labels:
            raise UserError("{}:{}: class id {} appears twice. Give every class its own id."
                            .format(path, number, class_id))
        labels[class_id] = name
    return labels


def read_labels(path):
    """Reads a label file.

    Args:
      path: label file in one of the module's four formats.

    Returns:
      dict {class_id (int, 0-based): name (str)}.

    Raises:
      UserError: the file is missing, empty, not UTF-8, has a blank line among
        names, repeats an id, is a malformed label_map.pbtxt, or has a line with a brace.
    """
    text = read_text(path, "label file", "Pass --labels with a UTF-8 file, one label per line.")
    if label_map.looks_like_label_map(text):
        return {item_id - 1: name for item_id, name in label_map.parse_label_map(text, path).items()}
    lines = _trimmed_lines(path, text)
    numbered = [(i + 1, line) for i, line in enumerate(lines) if line.strip()]
    matches = [(number, _ID_LINE.match(line)) for number, line in numbered]
    if all(m is not None for _, m in matches):
        return _parse_id_lines(path, matches)
    return _parse_name_lines(path, lines)


def _parse_name_lines(path, lines):
    labels = {}
    for class_id, line in enumerate(lines):
        if "{" in line or "}" in line:
            raise UserError("{}:{}: {!r} cannot be a class name. Pass a label file: label_map.pbtxt "
                            "(item {{ id: 1 name: 'circle' }}), 'id name' lines or one name per line"
                            .format(path, class_id + 1, line.strip()))
        if not line.strip():
            raise UserError("{}:{}: empty line in a one-name-per-line label file shifts every later id. "
                            "Put a placeholder name there (e.g. ???) or remove the line."
                            .format(path, class_id + 1))
        labels[class_id] = line.strip()
    return labels


def class_thresholds_by_id(thresholds_by_name, labels, where="postprocess.class_score_thresholds"):
    """Maps {label name: threshold} (as config.yaml holds it) to {class_id: threshold}.

    Args:
      thresholds_by_name: dict {name: float}, or None.
      labels: list of names (index = class id) or dict {class_id: name}.
      where: config location named in the error message.

    Returns:
      dict {class_id (int): threshold (float)}.

    Raises:
      UserError: a name is not one of the labels.
    """
    items = labels.items() if isinstance(labels, dict) else enumerate(labels)
    ids = {name: class_id for class_id, name in items}
    result = {}
    for name, threshold in (thresholds_by_name or {}).items():
        if name not in ids:
            raise UserError("{}: '{}' is not a label of this model. Known labels: {}."
                            .format(where, name, ", ".join(sorted(ids))))
        result[ids[name]] = float(threshold)
    return result
