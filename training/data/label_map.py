"""OD API `label_map.pbtxt` files in training: read with app.model.label_map (the one parser), written here.

Ids are 1-based in the file; the rest of edgedet uses 0-based class ids (`id - 1`).
"""

import os

from app.model.label_map import label_names, read_label_map  # noqa: F401 - the reader training uses


def _quoted(text):
    return '"{}"'.format(text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n"))


def write_label_map(path, names):
    """Writes names as ids 1..N (name and display_name), atomically.

    Args:
      path: destination file path.
      names: class names in id order (names[0] gets id 1).
    """
    names = list(names)
    if not names or not all(isinstance(n, str) and n for n in names):
        raise ValueError("expected a non-empty list of non-empty names, got {!r}".format(names))
    text = "".join("item {{\n  name: {0}\n  id: {1}\n  display_name: {0}\n}}\n".format(_quoted(name), index)
                   for index, name in enumerate(names, start=1))
    path = os.fspath(path)
    temp = path + ".tmp"
    with open(temp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(temp, path)
