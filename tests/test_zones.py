"""app.tracking.zones and app.tracking.filters: hand-computed membership, and bad zones as errors naming the key."""

import numpy as np
import pytest

from app.tracking import filters, zones
from app.config import FilterConfig, SourceObjectsConfig, ZoneConfig
from app.errors import UserError

LABELS = ["circle", "square", "triangle"]
# An L-shaped polygon: the 100 x 100 square minus its top-right quarter.
L_SHAPE = [[0, 0], [50, 0], [50, 50], [100, 50], [100, 100], [0, 100]]


def test_contains_hand_computed_on_a_concave_polygon():
    points = np.array([[25, 25], [75, 25], [75, 75], [25, 75], [150, 75], [-1, 50]], np.float64)
    assert zones.contains(zones.edges(L_SHAPE), points).tolist() == [True, False, True, True, False, False]


def test_membership_is_the_bottom_centre_of_the_box():
    boxes = np.array([[60, 0, 90, 40], [60, 20, 90, 60]], np.float32)  # bottoms at y 40 and 60
    np.testing.assert_allclose(zones.bottom_centres(boxes), [[75, 40], [75, 60]])
    inside = zones.contains(zones.edges(L_SHAPE), zones.bottom_centres(boxes))
    assert inside.tolist() == [False, True]  # the first box's top half is never what counts


def test_contains_each_is_contains_of_every_zone():
    triangle = [[0, 0], [60, 0], [60, 80]]
    found = [zones.Zone(name, None, 1, 0.0, None, zones.edges(p)) for name, p in (("l", L_SHAPE), ("t", triangle))]
    points = np.random.RandomState(0).uniform(-10, 110, (500, 2))
    inside = zones.contains_each(zones.joined_edges(found), points)
    assert inside.shape == (500, 2) and 0 < inside.sum() < 1000
    assert inside[:, 0].tolist() == zones.contains(found[0].edges, points).tolist()
    assert inside[:, 1].tolist() == zones.contains(found[1].edges, points).tolist()
    assert zones.contains_each(zones.joined_edges([]), points).shape == (500, 0)
    assert zones.contains_each(zones.joined_edges(found), np.zeros((0, 2))).shape == (0, 2)


def test_normalized_zone_resolves_to_pixels():
    cfg = {"left": ZoneConfig(points=[[0, 0], [0.5, 0], [0.5, 1], [0, 1]], coordinates="normalized", labels=["square"])}
    (zone,) = zones.make_zones(cfg, LABELS, 640, 480, "objects.sources.cam.zones")
    np.testing.assert_allclose(zone.polygon, [[0, 0], [320, 0], [320, 480], [0, 480]])
    assert zone.name == "left" and zone.class_ids == frozenset([1]) and zone.inertia == 3


@pytest.mark.parametrize("zone, fragment", [
    (ZoneConfig(points=[[0, 0], [10, 0]]), "objects.sources.cam.zones.z.points: a zone needs at least 3 points"),
    (ZoneConfig(points=[[0, 0], [10, 0], [700, 10]]), "zones.z.points[2]: [700, 10] lies outside the 640x480 frame"),
    (ZoneConfig(points=[[0, 0], [1.2, 0], [1, 1]], coordinates="normalized"), "zones.z.points[1]: [1.2, 0] lies outside"),
    (ZoneConfig(points=[[0, 0], [10, 0], [10, 10]], labels=["dog"]), "zones.z.labels: unknown label 'dog'"),
    (ZoneConfig(points=[[0, 0], [10, 0], [10, 10]], coordinates="percent"), "zones.z.coordinates: expected pixels"),
    (ZoneConfig(points=[[0, 0], [10, 0], [10, 10]], inertia=0), "inertia must be >= 1"),
])
def test_bad_zone_is_an_error_naming_the_key(zone, fragment):
    with pytest.raises(UserError) as e:
        zones.make_zones({"z": zone}, LABELS, 640, 480, "objects.sources.cam.zones")
    assert fragment in str(e.value)


def test_filters_keep_labels_scores_and_areas():
    source = SourceObjectsConfig(labels=["circle", "square"], filters={
        "circle": FilterConfig(min_score=0.6), "square": FilterConfig(min_area=200, max_area=1000)})
    rules = filters.make_rules(source, LABELS, "objects.sources.cam")
    boxes = np.array([[0, 0, 10, 10]] * 3 + [[0, 0, 20, 20], [0, 0, 40, 40], [0, 0, 10, 10]], np.float32)
    class_ids = np.array([0, 0, 1, 1, 1, 2])   # areas 100, 100, 100, 400, 1600, 100
    scores = np.array([0.5, 0.7, 0.9, 0.9, 0.9, 0.9], np.float32)
    assert filters.keep_mask(rules, boxes, class_ids, scores).tolist() == [False, True, False, True, False, False]
    assert filters.keep_mask(rules, boxes[:1], [7], scores[:1]).tolist() == [False]  # an id without a label


def test_filter_of_an_unknown_label_names_the_key():
    with pytest.raises(UserError, match="objects.sources.cam.filters: unknown label 'car'"):
        filters.make_rules(SourceObjectsConfig(filters={"car": FilterConfig()}), LABELS, "objects.sources.cam")
