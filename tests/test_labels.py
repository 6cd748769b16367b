"""app.model.labels: the four label formats, the real Coral COCO label file and OD API label map, and bad files."""

import pytest

from app.errors import UserError
from app.model.labels import class_thresholds_by_id, read_labels
from tests.conftest import CORAL, FIXTURES

ODAPI_LABEL_MAP = FIXTURES / "odapi" / "data" / "label_map.pbtxt"


def write(tmp_path, text, name="labels.txt"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return str(path)


def test_coral_id_name_format(tmp_path):
    assert read_labels(write(tmp_path, "0  person\n2  car\n12  traffic light\n")) == {
        0: "person", 2: "car", 12: "traffic light"}


def test_id_colon_format(tmp_path):
    assert read_labels(write(tmp_path, "0: circle\n1:square\n2 : triangle\n\n")) == {
        0: "circle", 1: "square", 2: "triangle"}


def test_one_name_per_line_including_names_starting_with_digits(tmp_path):
    assert read_labels(write(tmp_path, "circle\n3d box\n  triangle  \n")) == {
        0: "circle", 1: "3d box", 2: "triangle"}
    assert read_labels(write(tmp_path, "7up\nfanta\n")) == {0: "7up", 1: "fanta"}


def test_real_coral_coco_labels(coral_dir):
    # This copy is one name per line with "n/a" placeholders for COCO's unused ids.
    labels = read_labels(str(CORAL / "coco_labels.txt"))
    assert len(labels) == 90 and max(labels) == 89
    assert (labels[0], labels[11], labels[12], labels[89]) == (
        "person", "n/a", "stop sign", "toothbrush")


def test_real_odapi_label_map_gives_0_based_ids():
    if not ODAPI_LABEL_MAP.is_file():
        pytest.skip("../shared/fixtures/odapi is not laid out beside the project")
    assert read_labels(str(ODAPI_LABEL_MAP)) == {0: "circle", 1: "square", 2: "triangle"}


def test_label_map_with_comments_gaps_and_every_item_field(tmp_path):
    text = """# exported by hand
item {
  name: "/m/01" id: 3 display_name: 'dog'
  keypoints { id: 0 label: "nose" }
  ancestor_ids: [1, 2] frequency: RARE instance_count: 4
}
item < id: 1 display_name: 'it\\'s a cat' >
"""
    assert read_labels(write(tmp_path, text, "label_map.pbtxt")) == {2: "/m/01", 0: "it's a cat"}


@pytest.mark.parametrize("text,match", [
    ("item {\n  id: 1\n  nmae: 'circle'\n}\n", r"label_map\.pbtxt:3:3: no field named 'nmae'"),
    ("item {\n  id: 1\n  name: 'circle'\n", r":4:1: the file ends before a closing '}'"),
    ("item { id: one name: 'a' }", r":1:12: expected an integer value, got 'one'"),
    ("item { id: 1 name: circle }", r":1:20: expected a quoted string"),
    ("item { id: 1 id: 2 name: 'a' }", r"'id' given twice"),
    ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", r"id 1 appears twice"),
    ("item { id: 0 name: 'a' }", r"item #1 needs an id >= 1"),
    ('{"0": "circle"}\n', r":1: '\{\"0\": \"circle\"\}' cannot be a class name"),
    ("itme {\n  id: 1\n}\n", r":1: 'itme \{' cannot be a class name"),
])
def test_bad_label_maps_and_non_label_files_are_one_line_errors(tmp_path, text, match):
    with pytest.raises(UserError, match=match) as err:
        read_labels(write(tmp_path, text, "label_map.pbtxt"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text,match", [
    ("", "empty"),
    ("\n\n", "empty"),
    ("circle\n\nsquare\n", r":2: empty line"),
    ("0 a\n1 b\n0 c\n", r":3: class id 0 appears twice"),
])
def test_bad_label_files(tmp_path, text, match):
    with pytest.raises(UserError, match=match):
        read_labels(write(tmp_path, text))


def test_missing_and_binary_label_files(tmp_path):
    with pytest.raises(UserError, match="cannot read label file"):
        read_labels(str(tmp_path / "nope.txt"))
    path = tmp_path / "bin.txt"
    path.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(UserError, match="not UTF-8"):
        read_labels(str(path))


def test_class_thresholds_by_id():
    assert class_thresholds_by_id({"square": 0.7}, ["circle", "square"]) == {1: 0.7}
    assert class_thresholds_by_id({"car": 0.5}, {0: "person", 2: "car"}) == {2: 0.5}
    assert class_thresholds_by_id(None, ["a"]) == {}
    with pytest.raises(UserError, match="postprocess.class_score_thresholds: 'sqare' is not a label"):
        class_thresholds_by_id({"sqare": 0.7}, ["circle", "square"])
