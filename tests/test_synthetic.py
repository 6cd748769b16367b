"""app/capture/synthetic.py: determinism, tight visible boxes, variety, and the moving camera scene."""

import collections

import numpy as np
import pytest

from app.capture import synthetic
from app.capture.synthetic import Shape


def _pixel_box(mask):
    """Tight pixel-edge box (ymin, xmin, ymax, xmax) of a bool mask, normalized."""
    h, w = mask.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return np.array([rows[0] / h, cols[0] / w, (rows[-1] + 1) / h, (cols[-1] + 1) / w])


def _flat_shape(class_id, cy, cx, size, colour, angle=0.3, aspect=1.0):
    return Shape(class_id, cy, cx, size, aspect, angle, colour, (0.0, 1.0, 0.0))


def test_same_seed_same_scene_other_seed_differs():
    a = synthetic.render_scene(np.random.RandomState(7), 96, 128)
    b = synthetic.render_scene(np.random.RandomState(7), 96, 128)
    c = synthetic.render_scene(np.random.RandomState(8), 96, 128)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and np.array_equal(a[2], b[2])
    assert a[0].shape == (96, 128, 3) and a[0].dtype == np.uint8
    assert np.abs(a[0].astype(int) - c[0].astype(int)).mean() > 10


@pytest.mark.parametrize("class_id", [0, 1, 2])
def test_single_shape_box_is_tight_around_painted_pixels(class_id):
    rng = np.random.RandomState(class_id)
    for _ in range(20):
        image = np.zeros((120, 160, 3), np.uint8)
        shape = _flat_shape(class_id, rng.uniform(30, 90), rng.uniform(30, 130), rng.uniform(20, 50),
                            (200, 100, 50), angle=rng.uniform(0, 6.3), aspect=rng.uniform(0.7, 1.4))
        boxes, class_ids, _ = synthetic.compose(image, [shape])
        painted = image.any(axis=2)  # independent of the code under test: colour != background
        assert class_ids.tolist() == [class_id]
        np.testing.assert_allclose(boxes[0], _pixel_box(painted), atol=1.0 / 160)


def test_occluded_shape_box_covers_only_its_visible_part():
    image = np.zeros((100, 200, 3), np.uint8)
    under = _flat_shape(1, 50, 60, 60, (0, 0, 255), angle=0.0)      # columns 30..89
    over = _flat_shape(1, 50, 100, 60, (0, 255, 0), angle=0.0)      # columns 70..129, hides 70..89
    boxes, class_ids, _ = synthetic.compose(image, [under, over])
    visible_under = (image == [0, 0, 255]).all(axis=2)
    assert class_ids.tolist() == [1, 1]
    np.testing.assert_allclose(boxes[0], _pixel_box(visible_under), atol=1.0 / 200)
    assert boxes[0][3] * 200 == pytest.approx(70, abs=1)  # cut at the occluder's left edge


def test_mostly_hidden_shape_gets_no_box():
    image = np.zeros((100, 100, 3), np.uint8)
    small = _flat_shape(0, 50, 50, 30, (255, 0, 0))
    cover = _flat_shape(1, 50, 56, 40, (0, 255, 0), angle=0.0)  # hides ~80% of the circle
    boxes, class_ids, _ = synthetic.compose(image, [small, cover])
    assert class_ids.tolist() == [1]
    assert (image == [255, 0, 0]).all(axis=2).sum() > 0  # still painted, just unlabeled


def test_many_scenes_cover_counts_classes_and_sizes():
    rng = np.random.RandomState(3)
    counts, classes, sides = collections.Counter(), collections.Counter(), []
    for _ in range(200):
        image, boxes, class_ids = synthetic.render_scene(rng, 120, 140)
        assert boxes.dtype == np.float32 and class_ids.dtype == np.int32
        assert np.all(boxes >= 0) and np.all(boxes <= 1)
        assert np.all(boxes[:, 2] > boxes[:, 0]) and np.all(boxes[:, 3] > boxes[:, 1])
        counts[len(boxes)] += 1
        classes.update(class_ids.tolist())
        sides.extend(np.maximum((boxes[:, 2] - boxes[:, 0]) * 120, (boxes[:, 3] - boxes[:, 1]) * 140) / 120)
    assert set(counts) == set(range(7))
    assert min(classes[c] for c in range(3)) > 0.25 * sum(classes.values())
    assert np.percentile(sides, 2) >= 0.12 and np.percentile(sides, 50) < 0.45


def test_bad_arguments_raise_value_error():
    with pytest.raises(ValueError, match="RandomState"):
        synthetic.render_scene(0, 100, 100)
    with pytest.raises(ValueError, match=">= 32"):
        synthetic.render_scene(np.random.RandomState(0), 10, 100)
    with pytest.raises(ValueError, match="class_id"):
        synthetic.shape_polygon(_flat_shape(5, 10, 10, 10, (0, 0, 0)))


def _overlaps_another(boxes):
    low = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
    high = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    hit = np.all(high > low, axis=2)
    np.fill_diagonal(hit, False)
    return hit.any(axis=1)


def test_moving_scene_moves_smoothly_and_bounces_inside():
    scene = synthetic.MovingScene(320, 240, seed=1, num_shapes=3)
    previous, travelled, full_frames = None, 0.0, 0
    for _ in range(300):
        image, boxes, class_ids = scene.next_frame()
        assert image.shape == (240, 320, 3)
        assert set(class_ids.tolist()) <= {0, 1, 2}
        full_frames += len(boxes) == 3
        if previous is not None and len(boxes) == len(previous) == 3:
            # Occlusion may legitimately reshape a visible box; compare unoccluded boxes only.
            for i in np.flatnonzero(~_overlaps_another(boxes) & ~_overlaps_another(previous)):
                assert np.abs(boxes[i] - previous[i]).max() < 0.05  # a few pixels, never a jump
                travelled += np.abs(boxes[i] - previous[i]).sum()
        previous = boxes
    # 300 frames at >= 1 px/frame cross the frame, so only bouncing keeps all three in view
    # (in the other frames one shape is more than 60% hidden behind another: 122 of 300 here).
    assert travelled > 1.0 and full_frames > 150
    assert scene.frame_index == 300


def test_moving_scene_next_image_paints_what_next_frame_paints():
    # The camera path skips the box bookkeeping; the pixels must not change.
    with_boxes = synthetic.MovingScene(320, 240, seed=3)
    camera = synthetic.MovingScene(320, 240, seed=3)
    for _ in range(20):
        expected, _, _ = with_boxes.next_frame()
        np.testing.assert_array_equal(camera.next_image(), expected)
    assert camera.frame_index == with_boxes.frame_index == 20


def test_demo_model_sees_the_moving_scene_like_its_training_data():
    """The synthetic camera draws shapes the demo model was trained on: at the default 640x480
    (stretched to the 224x192 input), mAP@0.5 on 600 frames of 20 scenes at the live thresholds:
    0.814 with the bundle's class-agnostic NMS (0.875 per class, which keeps a second-guess label
    that mAP rewards); with the camera's old sizes (0.15-0.3 of the shorter side) it was 0.62."""
    pytest.importorskip("pycocotools")
    from app.inference import live_model, runtime
    from app.check import reference
    from app.model.bundle import load_bundle
    from conftest import ROOT
    from training.evaluate import coco_metrics

    bundle = load_bundle(str(ROOT / "models" / "demo"))
    engine, key = runtime.open_bundle_engine(bundle, "cpu", "int8", num_threads=1)
    worker = live_model.bundle_worker(engine, bundle, key, dict(bundle.postprocess, class_score_thresholds={}))
    Truth = collections.namedtuple("Truth", "height width boxes classes")
    truths, predictions = [], []
    for seed in range(20):
        scene = synthetic.MovingScene(640, 480, seed=seed)
        for _ in range(30):
            image, boxes, class_ids = scene.next_frame()
            for _ in range(3):
                scene.next_image()  # frames 4 apart: more poses in fewer frames
            predictions.append(reference.detect(worker, image))
            truths.append(Truth(480, 640, boxes, class_ids))
    assert sum(len(t.boxes) for t in truths) > 1000
    map50 = coco_metrics(truths, predictions, 3)["map50"]
    print("demo model on the synthetic camera, 640x480: mAP@0.5 {:.3f}".format(map50))
    assert map50 >= 0.8


def test_moving_scene_truth_keeps_each_shape_id():
    truth = synthetic.MovingScene(640, 480, seed=0, num_shapes=3)
    plain = synthetic.MovingScene(640, 480, seed=0, num_shapes=3)
    seen = set()
    for _ in range(30):
        image, boxes, class_ids, ids = truth.next_truth()
        same_image, same_boxes, _ = plain.next_frame()
        np.testing.assert_array_equal(image, same_image)
        np.testing.assert_allclose(boxes, same_boxes)
        # Shape i is class i (the first three shapes cover the three classes), id i + 1.
        assert (ids == class_ids + 1).all()
        seen.update(ids.tolist())
    assert seen <= {1, 2, 3} and len(seen) >= 2
