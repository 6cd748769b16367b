"""training/data/coco.py: COCO JSON round trip (also read by pycocotools) and bad-input errors."""

import json

import cv2
import numpy as np
import pytest
from pycocotools.coco import COCO

from app.capture import synthetic
from app.errors import UserError
from training.data import coco
from training.data.records import Example

NAMES = ["circle", "square", "triangle"]


def _write_set(tmp_path, count=4):
    rng = np.random.RandomState(1)
    examples = []
    for i in range(count):
        image, boxes, classes = synthetic.render_scene(rng, 40, 56, max_objects=3)
        ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        examples.append(Example(encoded.tobytes(), "jpeg", 40, 56, boxes, classes, str(i)))
    path = coco.write_coco(str(tmp_path), examples, NAMES)
    return path, examples


def _edit(path, change):
    data = json.loads(open(path).read())
    change(data)
    with open(path, "w") as f:
        json.dump(data, f)


def test_round_trip_and_pycocotools_reads_it(tmp_path):
    path, examples = _write_set(tmp_path)
    loaded = coco.load_coco(path, tmp_path, NAMES)
    assert len(loaded) == 4 and loaded.skipped == 0
    for want, got in zip(examples, loaded):
        assert got.encoded == want.encoded and got.image_format == "jpeg"
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-6)
        assert got.classes.tolist() == want.classes.tolist()
    ground_truth = COCO(path)
    first = ground_truth.loadAnns(ground_truth.getAnnIds(imgIds=[0]))
    x, y, w, h = first[0]["bbox"]
    ymin, xmin, ymax, xmax = examples[0].boxes[0]
    assert (x, y, x + w, y + h) == pytest.approx((xmin * 56, ymin * 40, xmax * 56, ymax * 40), abs=1e-4)
    assert ground_truth.loadCats(first[0]["category_id"])[0]["name"] == NAMES[examples[0].classes[0]]


def test_categories_are_matched_by_name_not_id(tmp_path):
    path, examples = _write_set(tmp_path, 2)

    def renumber(data):
        for cat in data["categories"]:
            cat["id"] += 10
        for ann in data["annotations"]:
            ann["category_id"] += 10
        data["categories"].append({"id": 99, "name": "unused"})
    _edit(path, renumber)
    loaded = coco.load_coco(path, tmp_path, NAMES)
    assert loaded[1].classes.tolist() == examples[1].classes.tolist()


def _first_bbox(value):
    def change(data):
        data["annotations"][0]["bbox"] = value
    return change


@pytest.mark.parametrize("change, reason", [
    (_first_bbox([50.0, 2.0, 10.0, 5.0]), r"bbox \[50.0, 2.0, 10.0, 5.0\] \[x, y, w, h\] is outside the 40x56 image"),
    (_first_bbox([5.0, 2.0, -3.0, 5.0]), "has width or height <= 0"),
    (lambda d: d["annotations"][0].update(category_id=42), "category_id 42 is not one of"),
    (lambda d: d["images"][0].update(file_name="gone.jpg"), "gone.jpg does not exist"),
    (lambda d: d["images"][0].update(height=41), "height,width say 41x56 but the image is 40x56"),
])
def test_bad_image_names_file_index_and_fix(tmp_path, change, reason):
    path, _ = _write_set(tmp_path)
    _edit(path, change)
    with pytest.raises(UserError, match=r"annotations.json: image 0 \([^)]*\): .*" + reason + r".*; fix the "
                                        r"annotations or pass --skip-bad$"):
        coco.load_coco(path, tmp_path, NAMES)
    loaded = coco.load_coco(path, tmp_path, NAMES, skip_bad=True)
    assert len(loaded) == 3 and loaded.skipped == 1


def test_undecodable_image(tmp_path):
    path, _ = _write_set(tmp_path, 2)
    (tmp_path / "000001.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.raises(UserError, match=r"image 1 \(000001.jpg\): undecodable image file"):
        coco.load_coco(path, tmp_path, NAMES)


def test_file_level_errors(tmp_path):
    with pytest.raises(UserError, match="missing.json do not exist"):
        coco.load_coco(tmp_path / "missing.json", tmp_path, NAMES)
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(UserError, match=r"bad.json:2:12: not valid JSON"):
        coco.load_coco(bad, tmp_path, NAMES)
    bad.write_text('{"images": [], "annotations": []}')
    with pytest.raises(UserError, match="missing COCO list categories"):
        coco.load_coco(bad, tmp_path, NAMES)
    path, _ = _write_set(tmp_path, 1)
    with pytest.raises(UserError, match=r"label 'hexagon' \(config model.labels\) is not a category"):
        coco.load_coco(path, tmp_path, NAMES + ["hexagon"])
    _edit(path, lambda d: d["annotations"][0].update(image_id=7))
    with pytest.raises(UserError, match="annotation 0 refers to image_id 7"):
        coco.load_coco(path, tmp_path, NAMES)
    _edit(path, lambda d: d.update(images=[], annotations=[]))
    with pytest.raises(UserError, match=r"holds no usable images \(0 listed, 0 bad\)"):
        coco.load_coco(path, tmp_path, NAMES)
