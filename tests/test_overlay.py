"""app.outputs.overlay: boxes, tags and the heads-up line land on the pixels they describe."""

import numpy as np
import pytest

from app.outputs import overlay
from app.model.postprocess import Detections
from app.pipeline.stats import Stats


def test_box_edges_have_the_class_colour_and_the_inside_is_untouched():
    image = np.zeros((120, 160, 3), np.uint8)
    overlay.draw_detections(image, np.array([[40.0, 50.0, 120.0, 100.0]]), [2], [0.87], ["triangle"])
    colour = overlay.class_colour(2)
    for y in (70, 80, 90):  # left and right edges, below the tag
        assert tuple(image[y, 40]) == colour and tuple(image[y, 120]) == colour
    for x in (60, 80, 100):  # bottom edge
        assert tuple(image[100, x]) == colour
    assert image[60:95, 45:115].max() == 0
    # The tag sits above the box: filled with the colour, with dark text in it.
    tag = image[35:48, 41:100]
    assert (tag == colour).all(axis=2).mean() > 0.5 and (tag.sum(axis=2) < 100).any()


def test_tag_moves_inside_when_the_box_touches_the_top():
    image = np.zeros((100, 100, 3), np.uint8)
    overlay.draw_detections(image, np.array([[10.0, 0.0, 90.0, 60.0]]), [0], [0.5], ["circle"])
    below = image[62:80, 11:60]
    assert (below == overlay.class_colour(0)).all(axis=2).mean() > 0.4


def test_mismatched_lengths_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        overlay.draw_detections(np.zeros((10, 10, 3), np.uint8), np.zeros((2, 4)), [0], [0.5], ["a"])


def test_hud_line_and_text():
    stats = Stats(runtime="ai_edge_litert 2.3.0 CPU")
    stats.stage("invoke", 0.0123)
    text = overlay.hud_text(stats)
    assert text == "0.0 fps | inference 12.3 ms | ai_edge_litert 2.3.0 CPU"
    image = np.full((60, 400, 3), 128, np.uint8)
    overlay.draw_hud(image, text)
    band = image[0:18, 0:300]
    assert (band == 255).all(axis=2).sum() > 50 and (band == 0).all(axis=2).sum() > 1000
    assert (image[40:, :] == 128).all()


def test_class_colours_are_distinct_and_wrap():
    colours = [overlay.class_colour(i) for i in range(len(overlay.PALETTE))]
    assert len(set(colours)) == len(colours) and overlay.class_colour(len(colours)) == colours[0]


def test_display_detection(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert not overlay.display_available()
    monkeypatch.setenv("DISPLAY", ":99")
    assert overlay.display_available()


def test_draw_result_uses_pixel_boxes_of_the_result():
    class Result(object):
        boxes = np.array([[10.0, 10.0, 50.0, 40.0]], np.float32)
        detections = Detections(np.zeros((1, 4), np.float32), np.array([0.9], np.float32), np.array([1], np.int32))
        labels = ["square"]
    image = np.zeros((60, 80, 3), np.uint8)
    overlay.draw_result(image, Result(), "")
    assert tuple(image[30, 10]) == overlay.class_colour(1) and tuple(image[30, 50]) == overlay.class_colour(1)


def test_draw_result_outlines_zones_and_tags_tracked_objects():
    from app.tracking.objects import ObjectFrame
    from app.tracking.zones import Zone, edges
    polygon = np.array([[5, 5], [70, 5], [70, 55], [5, 55]], np.float64)
    zone = Zone("door", polygon, 1, 0.0, None, edges(polygon))

    class Result(object):
        boxes = np.array([[20.0, 20.0, 40.0, 40.0]], np.float32)
        detections = Detections(np.zeros((1, 4), np.float32), np.array([0.9], np.float32), np.array([0], np.int32))
        labels = ["circle"]
        objects = ObjectFrame([], [zone], np.array([7]), [])
    image = np.zeros((60, 80, 3), np.uint8)
    overlay.draw_result(image, Result(), "")
    assert tuple(image[30, 70]) == overlay.ZONE_COLOUR and tuple(image[55, 40]) == overlay.ZONE_COLOUR
    assert tuple(image[30, 20]) == overlay.class_colour(0)
    assert overlay.tracked_labels(["circle", "square"], [7, -1]) == ["circle #7", "square"]
