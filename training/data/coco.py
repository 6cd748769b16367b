"""COCO detection JSON (an images folder + annotations) to and from `Examples`.

COCO boxes are pixel `[x, y, width, height]`; inside edgedet they become normalized
`[ymin, xmin, ymax, xmax]`. Category ids are matched to the model's labels by NAME, so a COCO
file may number its categories any way it likes. Crowd annotations (`iscrowd: 1`) are left
out, as they mark regions rather than objects. The record index in error messages is the
position of the image in the JSON `images` list.
"""

import json
import os

import cv2
import numpy as np

from app.errors import UserError
from app.textfile import read_text
from training.data.records import Example, Examples

_FIX = "fix the annotations or pass --skip-bad"
_PIXEL_TOLERANCE = 0.5  # exporters round box edges; half a pixel past the border is not an error


def load_coco(annotations_json, images_dir, labels, skip_bad=False):
    """Reads and validates a COCO detection data set, eagerly, once.

    Args:
      annotations_json: path of the COCO JSON file.
      images_dir: folder the `file_name`s are relative to.
      labels: class names in 0-based class-id order (config model.labels).
      skip_bad: leave bad images out (counted in `.skipped`) instead of stopping.

    Returns:
      `Examples` in the JSON's image order, encoded image bytes kept as read.

    Raises:
      UserError naming the file, the image index and the fix.
    """
    annotations_json, images_dir = os.fspath(annotations_json), os.fspath(images_dir)
    data = _read_json(annotations_json)
    category_to_class = _category_map(data, annotations_json, labels)
    per_image = _group_annotations(data, annotations_json)
    examples, skipped = Examples(), 0
    for index, image in enumerate(data["images"]):
        try:
            examples.append(_to_example(image, per_image.get(image.get("id"), []), images_dir,
                                        category_to_class))
        except ValueError as e:
            if not skip_bad:
                raise UserError("{}: image {} ({}): {}; {}".format(
                    annotations_json, index, image.get("file_name"), e, _FIX)) from None
            skipped += 1
    examples.skipped = skipped
    if not examples:
        raise UserError("{} holds no usable images ({} listed, {} bad); point the config at a "
                        "non-empty COCO file".format(annotations_json, len(data["images"]), skipped))
    return examples


def _read_json(path):
    if not os.path.isfile(path):
        raise UserError("COCO annotations {} do not exist; check data.train / data.eval in the config "
                        "or the --data folder".format(path))
    text = read_text(path, "COCO annotations", "Pass the annotations JSON of the data (data.train / data.eval).")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError("{}:{}:{}: not valid JSON ({}); fix or re-export the file".format(
            path, e.lineno, e.colno, e.msg)) from None
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict)
               or not isinstance(data.get(k), list)]
    if missing:
        raise UserError("{}: missing COCO list {}; a detection file needs 'images', 'annotations' "
                        "and 'categories'".format(path, missing[0]))
    return data


def _category_map(data, path, labels):
    """{COCO category id: 0-based class id} for the categories named in `labels`."""
    index = {name: i for i, name in enumerate(labels)}
    mapping = {c.get("id"): index[c.get("name")] for c in data["categories"] if c.get("name") in index}
    names = {c.get("name") for c in data["categories"]}
    absent = [name for name in labels if name not in names]
    if absent:
        raise UserError("{}: label '{}' (config model.labels) is not a category here (categories: {}); "
                        "make model.labels match the data".format(path, absent[0], sorted(map(str, names))))
    return mapping


def _group_annotations(data, path):
    image_ids = {image.get("id") for image in data["images"]}
    grouped = {}
    for number, ann in enumerate(data["annotations"]):
        if ann.get("image_id") not in image_ids:
            raise UserError("{}: annotation {} refers to image_id {} which is not in 'images'; "
                            "{}".format(path, number, ann.get("image_id"), _FIX))
        if not ann.get("iscrowd", 0):
            grouped.setdefault(ann["image_id"], []).append(ann)
    return grouped


def _to_example(image, annotations, images_dir, category_to_class):
    """One COCO image + its annotations -> Example, or ValueError with the reason."""
    if not isinstance(image.get("file_name"), str):
        raise ValueError("missing key file_name")
    path = os.path.join(images_dir, image["file_name"])
    if not os.path.isfile(path):
        raise ValueError("image file {} does not exist".format(path))
    with open(path, "rb") as f:
        encoded = f.read()
    decoded = cv2.imdecode(np.frombuffer(encoded, np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise ValueError("undecodable image file {}".format(path))
    height, width = decoded.shape[:2]
    if (image.get("height", height), image.get("width", width)) != (height, width):
        raise ValueError("height,width say {}x{} but the image is {}x{}".format(
            image.get("height"), image.get("width"), height, width))
    boxes, classes = [], []
    for ann in annotations:
        if ann.get("category_id") not in category_to_class:
            raise ValueError("category_id {} is not one of the labels' categories {}".format(
                ann.get("category_id"), sorted(category_to_class)))
        boxes.append(_normalized_box(ann.get("bbox"), height, width))
        classes.append(category_to_class[ann["category_id"]])
    image_format = "png" if encoded[:4] == b"\x89PNG" else "jpeg"
    return Example(encoded=encoded, image_format=image_format, height=height, width=width,
                   boxes=np.array(boxes, np.float32).reshape(-1, 4), classes=np.array(classes, np.int32),
                   source_id=str(image.get("id")))


def _normalized_box(bbox, height, width):
    """COCO pixel [x, y, w, h] -> normalized [ymin, xmin, ymax, xmax], or ValueError."""
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError("bbox {!r} is not [x, y, width, height]".format(bbox))
    x, y, w, h = (float(v) for v in bbox)
    if w <= 0 or h <= 0:
        raise ValueError("bbox {} has width or height <= 0 (inverted or empty)".format(bbox))
    t = _PIXEL_TOLERANCE
    if x < -t or y < -t or x + w > width + t or y + h > height + t:
        raise ValueError("bbox {} [x, y, w, h] is outside the {}x{} image".format(bbox, height, width))
    box = np.array([y / height, x / width, (y + h) / height, (x + w) / width])
    return np.clip(box, 0.0, 1.0)


def write_coco(out_dir, examples, label_names, annotations_name="annotations.json"):
    """Writes examples as a COCO data set: the encoded images plus one JSON, in `out_dir`.

    Args:
      out_dir: existing folder; images are written as `<index>.<format>` beside the JSON,
        and `file_name` is relative to it.
      examples: sequence of `Example` (boxes normalized [ymin, xmin, ymax, xmax], classes 0-based).
      label_names: names by 0-based class id; COCO category id = class id + 1.
      annotations_name: file name of the JSON.

    Returns:
      Path of the JSON file (written atomically).
    """
    images, annotations = [], []
    for index, example in enumerate(examples):
        file_name = "{:06d}.{}".format(index, "png" if example.image_format == "png" else "jpg")
        with open(os.path.join(out_dir, file_name), "wb") as f:
            f.write(example.encoded)
        images.append({"id": index, "file_name": file_name, "height": int(example.height),
                       "width": int(example.width)})
        for box, class_id in zip(np.asarray(example.boxes, np.float64), example.classes):
            x, y = box[1] * example.width, box[0] * example.height
            w, h = (box[3] - box[1]) * example.width, (box[2] - box[0]) * example.height
            annotations.append({"id": len(annotations) + 1, "image_id": index,
                                "category_id": int(class_id) + 1, "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
    categories = [{"id": i + 1, "name": name, "supercategory": "shape"} for i, name in enumerate(label_names)]
    path = os.path.join(out_dir, annotations_name)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    os.replace(path + ".tmp", path)
    return path
