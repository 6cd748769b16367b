"""app.labels: the three label formats, the real Coral COCO label file, and bad files."""

import pytest

from app.errors import UserError
from app.labels import class_thresholds_by_id, read_labels
from tests.conftest import CORAL


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
