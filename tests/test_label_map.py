"""training/data/label_map.py: OD API label_map.pbtxt read/write and its user errors."""

import pytest

from app.errors import UserError
from training.data import label_map


def _write(tmp_path, text):
    path = tmp_path / "label_map.pbtxt"
    path.write_text(text)
    return path


def test_round_trip_gives_one_based_ids(tmp_path):
    path = tmp_path / "label_map.pbtxt"
    label_map.write_label_map(path, ["circle", "square", "triangle"])
    assert label_map.read_label_map(path) == {1: "circle", 2: "square", 3: "triangle"}
    assert "display_name: \"square\"" in path.read_text()
    assert not (tmp_path / "label_map.pbtxt.tmp").exists()


def test_reads_od_api_style_file_with_comments_and_extra_fields(tmp_path):
    path = _write(tmp_path, """# a comment
item {
  name: '/m/01'
  id: 2
  display_name: "dog"
  keypoints { id: 0 label: "nose" }
  frequency: FREQUENT
}
item { id: 1 display_name: 'cat' }
""")
    labels = label_map.read_label_map(path)
    assert labels == {2: "/m/01", 1: "cat"}
    assert label_map.label_names(labels) == ["cat", "/m/01"]


def test_missing_file_names_file_and_fix(tmp_path):
    with pytest.raises(UserError, match=r"nope\.pbtxt does not exist.*data\.label_map"):
        label_map.read_label_map(tmp_path / "nope.pbtxt")


def test_syntax_error_names_line_and_column(tmp_path):
    path = _write(tmp_path, "item {\n  id: 1\n  nmae: 'circle'\n}\n")
    with pytest.raises(UserError) as err:
        label_map.read_label_map(path)
    assert "label_map.pbtxt:3:3:" in str(err.value) and "nmae" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, needle", [
    ("", "has no items"),
    ("item { name: 'a' }", "item #1 needs an id"),
    ("item { id: 0 name: 'a' }", "item #1 needs an id >= 1"),
    ("item { id: 1 name: 'a' } item { id: 1 name: 'b' }", "id 1 appears twice"),
])
def test_bad_items_are_user_errors(tmp_path, text, needle):
    with pytest.raises(UserError, match=needle):
        label_map.read_label_map(_write(tmp_path, text))


def test_gaps_in_ids_are_refused():
    with pytest.raises(UserError, match=r"ids must be 1\.\.2 without gaps, got \[1, 3\]"):
        label_map.label_names({1: "a", 3: "b"})


def test_write_rejects_empty_names(tmp_path):
    with pytest.raises(ValueError, match="non-empty"):
        label_map.write_label_map(tmp_path / "x.pbtxt", ["a", ""])
