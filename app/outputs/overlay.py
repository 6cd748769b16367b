"""Drawing on frames (boxes, labels, scores, a heads-up line) and the preview window.

Boxes arrive in source-frame pixels (x0, y0, x1, y1), as in FrameResult.boxes. Each class
has a fixed colour so a box keeps its colour from frame to frame. With the object stage on,
zones are outlined and a tracked detection's tag carries its object id.
"""

import logging
import os
import threading

import numpy as np

log = logging.getLogger(__name__)

# BGR, bright and far apart; class id modulo the list.
PALETTE = ((0, 255, 0), (255, 0, 255), (0, 165, 255), (255, 255, 0), (0, 0, 255), (255, 0, 0),
           (0, 255, 255), (128, 0, 255))
HUD_COLOUR = (255, 255, 255)
ZONE_COLOUR = (0, 215, 255)  # BGR gold: not a class colour
THICKNESS = 2
_ESC = 27


def class_colour(class_id):
    """BGR colour of a class id."""
    return PALETTE[int(class_id) % len(PALETTE)]


def draw_detections(image, boxes, class_ids, scores, labels):
    """Draws boxes with "label score" tags, in place.

    Args:
      image: uint8 [H, W, 3] BGR frame.
      boxes: float [K, 4] pixels (x0, y0, x1, y1).
      class_ids: int [K] 0-based.
      scores: float [K] in [0, 1].
      labels: K label strings.
    """
    import cv2
    if len(boxes) != len(class_ids) or len(boxes) != len(scores) or len(boxes) != len(labels):
        raise ValueError("boxes, class_ids, scores and labels must have the same length, got {} {} {} {}"
                         .format(len(boxes), len(class_ids), len(scores), len(labels)))
    for box, class_id, score, label in zip(boxes, class_ids, scores, labels):
        x0, y0, x1, y1 = [int(round(float(v))) for v in box]
        colour = class_colour(class_id)
        cv2.rectangle(image, (x0, y0), (x1, y1), colour, THICKNESS)
        text = "{} {:.0f}%".format(label, 100.0 * float(score))
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
        ty = y0 - 4 if y0 - th - base - 4 >= 0 else y1 + th + 4  # above the box unless off-frame
        cv2.rectangle(image, (x0, ty - th - 2), (x0 + tw + 2, ty + base - 2), colour, -1)
        cv2.putText(image, text, (x0 + 1, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)


def draw_hud(image, text):
    """Writes one heads-up line at the top left, on a dark band so it reads on any scene."""
    import cv2
    if not text:
        return
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    cv2.rectangle(image, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, HUD_COLOUR, 1, cv2.LINE_AA)


def hud_text(stats):
    """"12.3 fps | inference 45.6 ms | ai_edge_litert 2.3.0 CPU" from an app.pipeline.stats.Stats."""
    return "{:.1f} fps | inference {:.1f} ms | {}".format(stats.processed_fps(), stats.stage_ms("invoke"),
                                                         stats.runtime)


def draw_zones(image, zones):
    """Outlines each zone's polygon with its name at its first vertex, in place.

    Args:
      image: uint8 [H, W, 3] BGR frame.
      zones: app.tracking.zones.Zone list (polygons in source-frame pixels (x, y)).
    """
    import cv2
    for zone in zones:
        points = [tuple(int(round(v)) for v in p) for p in zone.polygon]
        cv2.polylines(image, [np.array(points, np.int32)], True, ZONE_COLOUR, 1, cv2.LINE_8)
        cv2.putText(image, zone.name, (points[0][0] + 3, points[0][1] + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                    ZONE_COLOUR, 1, cv2.LINE_AA)


def tracked_labels(labels, detection_ids):
    """"label #id" for detections of a confirmed object, the bare label otherwise."""
    return [label if i < 0 else "{} #{}".format(label, i) for label, i in zip(labels, detection_ids)]


def draw_result(image, result, hud):
    """The pipeline's overlay step: the zones, every detection of a FrameResult (with its object's
    id once tracked) and the heads-up line."""
    labels = result.labels
    objects = getattr(result, "objects", None)
    if objects is not None:
        draw_zones(image, objects.zones)
        labels = tracked_labels(labels, objects.detection_ids)
    draw_detections(image, result.boxes, result.detections.class_ids, result.detections.scores, labels)
    draw_hud(image, hud)


def display_available():
    """True when a preview window can be shown (an X display or Wayland)."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


class PreviewWindow(object):
    """A cv2.imshow window as a sink; q or Esc calls `on_quit`.

    HighGUI must be driven from one thread: the output thread calls write() for every frame.

    Args:
      on_quit: callable() run when the user presses q or Esc (the pipeline's stop).
      title: window title.
    """

    wants_image = True

    def __init__(self, on_quit, title="edgedet"):
        self._on_quit = on_quit
        self._title = title
        self._thread = None

    def write(self, result):
        import cv2
        if self._thread is None:
            # Plain window (no Qt toolbar/status bar): the picture is the whole client area.
            cv2.namedWindow(self._title, cv2.WINDOW_AUTOSIZE | getattr(cv2, "WINDOW_GUI_NORMAL", 0))
            self._thread = threading.current_thread()
        cv2.imshow(self._title, result.image)
        key = cv2.waitKey(1) & 0xFF
        if key in (ord("q"), ord("Q"), _ESC):
            log.info("preview window: quit key pressed")
            self._on_quit()

    def close(self):
        """Destroys the window if called on the thread that drew it; otherwise process exit does."""
        import cv2
        if self._thread is threading.current_thread():
            cv2.destroyWindow(self._title)
            cv2.waitKey(1)
            self._thread = None
