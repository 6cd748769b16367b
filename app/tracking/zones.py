"""Zones: named polygons of a source's frame, and which objects are inside them.

An object is inside a zone when the bottom centre of its box is (Frigate's rule: where a person
or car stands, not where its box reaches). Polygons come from config.yaml (`objects.sources.S.
zones`) in pixels or normalized 0..1 coordinates, and are resolved to pixels for a frame size.
A zone with fewer than 3 points, a point outside the frame or an unknown label is a `UserError`
naming the key.
"""

import collections

import numpy as np

from app.errors import UserError
from app.tracking.floats import listed

# name; polygon float64 [P, 2] pixels (x, y); inertia (frames); loitering_s; class_ids: frozenset
# of the 0-based labels that count in the zone, or None for every label; edges: `edges(polygon)`.
Zone = collections.namedtuple("Zone", "name polygon inertia loitering_s class_ids edges")
COORDINATES = ("pixels", "normalized")


def label_ids(names, label_names, where):
    """0-based class ids of label names; an unknown name is a UserError naming `where`."""
    ids = []
    for name in names:
        if name not in label_names:
            raise UserError("{}: unknown label '{}'. The model's labels: {}".format(
                where, name, ", ".join(label_names)))
        ids.append(label_names.index(name))
    return ids


def check_zone(zone, label_names, where):
    """Checks what a zone says without the frame size (points, coordinates, inertia, labels).

    Args:
      zone: app.config.ZoneConfig.
      label_names: the model's labels in class-id order.
      where: the zone's dotted key for messages.
    """
    if zone.coordinates not in COORDINATES:
        raise UserError("{}.coordinates: expected pixels or normalized, got {!r}".format(where, zone.coordinates))
    if len(zone.points) < 3:
        raise UserError("{}.points: a zone needs at least 3 points [x, y], got {}".format(where, len(zone.points)))
    for i, point in enumerate(zone.points):
        if len(point) != 2:
            raise UserError("{}.points[{}]: expected [x, y], got {!r}".format(where, i, point))
    if zone.inertia < 1 or zone.loitering_s < 0:
        raise UserError("{}: inertia must be >= 1 frame and loitering_s >= 0, got {} and {}".format(
            where, zone.inertia, zone.loitering_s))
    label_ids(zone.labels, label_names, where + ".labels")


def zone_polygon(zone, width, height, where):
    """float64 [P, 2] pixel vertices (x, y) of a checked zone in a `width` x `height` frame.

    A point outside the frame (normalized outside 0..1, pixels outside 0..width, 0..height) is a
    UserError naming the point.
    """
    points = np.asarray(zone.points, np.float64)
    limit = np.array([1.0, 1.0]) if zone.coordinates == "normalized" else np.array([width, height], np.float64)
    for i, point in enumerate(points):
        if (point < 0).any() or (point > limit).any():
            raise UserError("{}.points[{}]: [{:g}, {:g}] lies outside the {}x{} frame ({} coordinates go up "
                            "to {:g}, {:g})".format(where, i, point[0], point[1], width, height, zone.coordinates,
                                                   limit[0], limit[1]))
    return points * [width, height] if zone.coordinates == "normalized" else points


def make_zones(zones, label_names, width, height, where):
    """Zones of one source for a frame size.

    Args:
      zones: dict name -> app.config.ZoneConfig.
      label_names: the model's labels in class-id order.
      width, height: the frame size in pixels.
      where: the `zones` dotted key for messages.

    Returns:
      list of Zone, in the config's order.
    """
    result = []
    for name, zone in zones.items():
        key = "{}.{}".format(where, name)
        check_zone(zone, label_names, key)
        ids = frozenset(label_ids(zone.labels, label_names, key)) if zone.labels else None
        polygon = zone_polygon(zone, width, height, key)
        result.append(Zone(name, polygon, zone.inertia, zone.loitering_s, ids, edges(polygon)))
    return result


def bottom_centre(box):
    """(x, y) python floats: the bottom centre of a pixel box (x0, y0, x1, y1) of python floats."""
    return (box[0] + box[2]) * 0.5, box[3]


def bottom_centres(boxes):
    """float64 [K, 2] (x, y) bottom centres of pixel boxes [K, 4] (x0, y0, x1, y1)."""
    return np.array([bottom_centre(box) for box in listed(boxes, np.float64, 4)], np.float64).reshape(-1, 2)


def edges(polygon):
    """(x0, y0, x1, y1, slope) float64 [P] each: a polygon's edges from vertex i to i + 1 and
    their dx/dy (0 for horizontal edges: no horizontal ray crosses them, so it is never used)."""
    polygon = np.asarray(polygon, np.float64)
    x0, y0 = polygon[:, 0], polygon[:, 1]
    x1, y1 = np.concatenate([x0[1:], x0[:1]]), np.concatenate([y0[1:], y0[:1]])
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(y1 != y0, (x1 - x0) / (y1 - y0), 0.0)
    return x0, y0, x1, y1, slope


def joined_edges(zones):
    """The edges of several zones end to end, for `contains_each`: (x0, y0, x1, y1, slope) float64
    [E] each, and int64 [Z] the index of each zone's first edge (None when there are no zones)."""
    if not zones:
        return None
    parts = list(zip(*(zone.edges for zone in zones)))
    starts = np.cumsum([0] + [len(zone.edges[0]) for zone in zones[:-1]])
    return tuple(np.concatenate(part) for part in parts) + (starts,)


def _crossings(polygon_edges, points):
    """bool [K, E]: the ray from each point (x, y) towards +x crosses edge E (a half-open rule in y)."""
    x0, y0, x1, y1, slope = polygon_edges                      # [E] each
    x, y = points[:, 0:1], points[:, 1:2]                      # [K, 1]
    straddles = (y0 <= y) != (y1 <= y)                         # [K, E] the edge crosses the ray's row
    return straddles & (x < x0 + (y - y0) * slope)


def contains(polygon_edges, points):
    """Even-odd point-in-polygon test of many points.

    Args:
      polygon_edges: `edges(polygon)` of a polygon's vertices (x, y).
      points: float [K, 2] (x, y) in the polygon's units.

    Returns:
      bool [K]: True inside (points exactly on an edge may go either way).
    """
    return _crossings(polygon_edges, points).sum(axis=1) % 2 == 1


def contains_each(joined, points):
    """`contains` of every zone at once (one set of array ops however many zones).

    Args:
      joined: `joined_edges(zones)`.
      points: float [K, 2] (x, y) pixels.

    Returns:
      bool [K, Z]: point k is inside zone z; [K, 0] when there are no zones.
    """
    if joined is None or not len(points):  # (reduceat of no rows: not relied on with old numpy)
        return np.zeros((len(points), 0 if joined is None else len(joined[5])), bool)
    return np.logical_xor.reduceat(_crossings(joined[:5], points), joined[5], axis=1)  # odd crossings per zone


# Most point-edge tests done in python (a frame's few objects and zones), beyond them contains_each:
# up to here python was faster back to back and woken every 33 ms (8 points x 8 edges: 4.3 against
# 7.9 us, 29 against 94 us woken; 16 x 8: 8.7 against 9.1 us); 32 x 8: numpy 12 against 18 us.
PYTHON_TESTS = 128
# The zones of a frame size for `inside_each`: joined_edges(zones) (numpy, for many points) and
# [Z] lists of (x0, y0, x1, y1, slope) python tuples, each zone's edges (for few).
ZoneTests = collections.namedtuple("ZoneTests", "joined edges")


def zone_tests(zones):
    """ZoneTests of a list of Zone."""
    return ZoneTests(joined_edges(zones), [list(zip(*(part.tolist() for part in zone.edges))) for zone in zones])


def inside_each(tests, points):
    """`contains_each` of python points: [K] lists of Z bools, point k inside zone z.

    Args:
      tests: `zone_tests(zones)`.
      points: [K] (x, y) python floats, pixels.

    Plain python for up to PYTHON_TESTS point-edge tests, numpy beyond: the same formula in
    float64, so the same answers.
    """
    if tests.joined is not None and len(points) * len(tests.joined[0]) > PYTHON_TESTS:
        return contains_each(tests.joined, np.array(points, np.float64).reshape(-1, 2)).tolist()
    return [[_odd_crossings(edges, x, y) for edges in tests.edges] for x, y in points]


def _odd_crossings(edges, x, y):
    """True when the ray from (x, y) towards +x crosses an odd number of `edges` (`_crossings`' rule)."""
    odd = False
    for x0, y0, x1, y1, slope in edges:
        if (y0 <= y) != (y1 <= y) and x < x0 + (y - y0) * slope:
            odd = not odd
    return odd
