"""Synthetic scenes: circles, squares and triangles on textured backgrounds (numpy + OpenCV).

Used twice: `edgedet-train synth` writes a training/eval set from `render_scene`, and the
app's `synthetic` camera plays a `MovingScene`. Runs on Python 3.7, numpy 1.16, OpenCV 3.2.

Every shape is a polygon filled with `cv2.fillPoly` (circles are 64-gons), so one rasteriser
gives both the painted pixels and the mask the boxes come from. Boxes are the tight box of
the shape pixels still VISIBLE after later shapes were painted over them, as normalized
`[ymin, xmin, ymax, xmax]` with pixel-edge convention (a shape covering rows 10..19 of a
100-row image has ymin 0.10, ymax 0.20). A shape more than `MAX_HIDDEN` hidden (by later
shapes or the image border) is still painted but gets no box.
"""

import collections
import math

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle")

# Shape size (diameter / side) as a fraction of the image's shorter side. The floor keeps the
# smallest shape at ~35 px in a 192x224 input, about two cells of SSD-MobileNetV2's first
# (stride 16) feature map: below that the demo model told circles from squares by chance.
MIN_SIZE = 0.18
MAX_SIZE = 0.40
# Width/height stretch per class. Circles stay round enough to be told from rounded squares.
ASPECT_RANGE = {0: (0.8, 1.25), 1: (0.6, 1.6), 2: (0.7, 1.4)}
# A shape with less than 40% of its area visible is unlabeled, as annotators would do.
MAX_HIDDEN = 0.6
# Mean colour distance (0..441) between a shape and what it is painted over.
MIN_CONTRAST = 70.0
_SHIFT = 4  # fillPoly fractional bits: sub-pixel vertices give smooth motion.
_CIRCLE_VERTICES = 64
_ANGLES = np.linspace(0.0, 2.0 * math.pi, _CIRCLE_VERTICES, endpoint=False)
_UNIT_CIRCLE = np.stack([np.cos(_ANGLES), np.sin(_ANGLES)], axis=1)

Shape = collections.namedtuple("Shape", "class_id cy cx size aspect angle colour shade")
Shape.__doc__ = """One shape in pixels: centre (cy, cx), size (px), aspect (w/h stretch),
angle (radians), colour (B, G, R ints) and shade (dy, dx, gain) a linear brightness ramp."""


def shape_polygon(shape):
    """Vertices of a shape in image pixels.

    Args:
      shape: a `Shape`.

    Returns:
      float64 [V, 2] array of (x, y) vertices, the order cv2.fillPoly expects.
    """
    half = shape.size / 2.0
    if shape.class_id == 0:
        unit = _UNIT_CIRCLE * half
    elif shape.class_id == 1:
        unit = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64) * half
    elif shape.class_id == 2:
        # Equilateral, circumradius chosen so the triangle's height is ~0.9 of `size`.
        t = np.array([-90.0, 30.0, 150.0]) * math.pi / 180.0
        unit = np.stack([np.cos(t), np.sin(t)], axis=1) * (shape.size * 0.6)
    else:
        raise ValueError("expected class_id 0, 1 or 2, got {}".format(shape.class_id))
    stretch = np.array([math.sqrt(shape.aspect), 1.0 / math.sqrt(shape.aspect)])
    c, s = math.cos(shape.angle), math.sin(shape.angle)
    rotation = np.array([[c, s], [-s, c]])
    return (unit * stretch).dot(rotation) + np.array([shape.cx, shape.cy])


def _polygon_area(points):
    """Shoelace area of a polygon in square pixels (unclipped by the image border)."""
    x, y = points[:, 0], points[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _shape_mask(points, height, width):
    """Rasterises a polygon inside its clipped bounding rectangle.

    Returns:
      (y0, x0, mask) where mask is a bool [h, w] array placed at rows y0.., columns x0..;
      mask is None when the polygon lies entirely outside the image.
    """
    x0 = max(int(math.floor(points[:, 0].min())), 0)
    y0 = max(int(math.floor(points[:, 1].min())), 0)
    x1 = min(int(math.ceil(points[:, 0].max())) + 1, width)
    y1 = min(int(math.ceil(points[:, 1].max())) + 1, height)
    if x1 <= x0 or y1 <= y0:
        return y0, x0, None
    local = np.zeros((y1 - y0, x1 - x0), np.uint8)
    fixed = np.round((points - [x0, y0]) * (1 << _SHIFT)).astype(np.int32)
    cv2.fillPoly(local, [fixed], 1, cv2.LINE_8, _SHIFT)
    return y0, x0, local.astype(bool)


def _paint(image, y0, x0, mask, shape):
    """Fills `mask` in `image` with the shape's colour times its linear shading ramp.

    The ramp is computed over the mask's box one channel at a time, and `cv2.bitwise_or`
    with the mask writes only the shape's pixels: 4x faster than numpy fancy indexing over
    the masked pixels, with the same bytes. The result is assigned back rather than written
    through `dst`, so an OpenCV that copies a strided view cannot lose it.
    """
    dy, dx, gain = shape.shade
    h, w = mask.shape
    ys = np.arange(h, dtype=np.float32) + y0 - shape.cy
    xs = np.arange(w, dtype=np.float32) + x0 - shape.cx
    ramp = 1.0 + gain * (ys[:, None] * dy + xs[None, :] * dx) / max(shape.size, 1.0)
    patch = np.empty((h, w, 3), np.uint8)
    for channel, value in enumerate(shape.colour):
        patch[:, :, channel] = np.clip(ramp * np.float32(value), 0, 255)  # truncates, like astype
    region = image[y0:y0 + h, x0:x0 + w]
    image[y0:y0 + h, x0:x0 + w] = cv2.bitwise_or(patch, patch, dst=region.copy(), mask=mask.view(np.uint8))


def compose(image, shapes):
    """Paints shapes in order (later ones on top) and returns their visible boxes.

    Args:
      image: uint8 [H, W, 3] BGR background; painted in place.
      shapes: sequence of `Shape`.

    Returns:
      (boxes, class_ids, visible): boxes float32 [K, 4] normalized [ymin, xmin, ymax, xmax]
      of the K shapes at most `MAX_HIDDEN` hidden, in painting order; class_ids int32 [K]
      0-based; visible a list of K bool [H, W] masks of their visible pixels.
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError("expected a uint8 [H, W, 3] image, got {} {}".format(image.dtype, image.shape))
    return _compose_indexed(image, shapes)[:3]


def _compose_indexed(image, shapes):
    """`compose`, plus int32 [K]: each kept box's index in `shapes`."""
    owner = np.full(image.shape[:2], -1, np.int16)  # index of the shape on top of each pixel
    areas = _paint_shapes(image, shapes, owner)
    return _visible_boxes(owner, shapes, areas)


def _paint_shapes(image, shapes, owner=None):
    """Paints shapes in order; records each pixel's top shape index in `owner` if given.

    Returns:
      list of the shapes' polygon areas (unclipped), in painting order; empty without `owner`.
    """
    height, width = image.shape[:2]
    areas = []
    for index, shape in enumerate(shapes):
        points = shape_polygon(shape)
        if owner is not None:
            areas.append(_polygon_area(points))
        y0, x0, mask = _shape_mask(points, height, width)
        if mask is None:
            continue
        _paint(image, y0, x0, mask, shape)
        if owner is not None:
            owner[y0:y0 + mask.shape[0], x0:x0 + mask.shape[1]][mask] = index
    return areas


def _visible_boxes(owner, shapes, areas):
    height, width = owner.shape
    boxes, class_ids, visible, indices = [], [], [], []
    for index, shape in enumerate(shapes):
        mask = owner == index
        count = int(mask.sum())
        if count == 0 or count < (1.0 - MAX_HIDDEN) * areas[index]:
            continue
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        boxes.append([rows[0] / height, cols[0] / width, (rows[-1] + 1) / height, (cols[-1] + 1) / width])
        class_ids.append(shape.class_id)
        visible.append(mask)
        indices.append(index)
    return (np.array(boxes, np.float32).reshape(-1, 4), np.array(class_ids, np.int32), visible,
            np.array(indices, np.int32))


def random_background(rng, height, width):
    """A textured background: a gradient, blotchy noise, stripes or blocks, plus clutter lines.

    Args:
      rng: numpy.random.RandomState.
      height: image height in pixels.
      width: image width in pixels.

    Returns:
      uint8 [height, width, 3] BGR image.
    """
    ys = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    xs = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    angle = rng.uniform(0.0, 2.0 * math.pi)
    along = xs * math.cos(angle) + ys * math.sin(angle)
    kind = rng.randint(4)
    if kind == 0:  # linear gradient
        t = (along - along.min()) / max(float(along.max() - along.min()), 1e-6)
    elif kind == 1:  # blotchy low-frequency noise
        t = _smooth_noise(rng, height, width, 1)[..., 0]
    elif kind == 2:  # sinusoidal or hard stripes
        t = 0.5 + 0.5 * np.sin(2.0 * math.pi * rng.uniform(2.0, 14.0) * along + rng.uniform(0, 6.3))
        if rng.rand() < 0.5:
            t = (t > 0.5).astype(np.float32)
    else:  # a fine grid of random cells, each smaller than the smallest shape
        small = rng.rand(rng.randint(10, 25), rng.randint(10, 25)).astype(np.float32)
        t = cv2.resize(small, (width, height), interpolation=cv2.INTER_NEAREST)
    low, high = rng.randint(0, 256, (2, 3)).astype(np.float32)
    image = low + (high - low) * t[..., None]
    image += (_smooth_noise(rng, height, width, 3) - 0.5) * rng.uniform(0.0, 80.0)
    image = np.clip(image, 0, 255).astype(np.uint8)
    _draw_clutter(rng, image)
    return image


def _smooth_noise(rng, height, width, channels):
    """float32 [height, width, channels] noise in [0, 1], smooth over ~1/3..1/12 of the image."""
    small = rng.rand(rng.randint(3, 12), rng.randint(3, 12), channels).astype(np.float32)
    big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.clip(big.reshape(height, width, channels), 0.0, 1.0)


def _draw_clutter(rng, image):
    """Thin lines, open polylines and arcs under 180 degrees: edges that are not shapes."""
    height, width = image.shape[:2]
    for _ in range(rng.randint(0, 9)):
        colour = tuple(int(v) for v in rng.randint(0, 256, 3))
        thickness = int(rng.randint(1, 4))
        kind = rng.randint(3)
        if kind == 0:
            # (numpy 1.16's randint takes no array bounds, hence rand * size.)
            p = (rng.rand(4) * [width, height, width, height]).astype(int)
            cv2.line(image, (int(p[0]), int(p[1])), (int(p[2]), int(p[3])), colour, thickness, cv2.LINE_AA)
        elif kind == 1:
            points = (rng.rand(rng.randint(3, 6), 2) * [width, height]).astype(np.int32)
            cv2.polylines(image, [points], False, colour, thickness, cv2.LINE_AA)
        else:
            centre = (int(rng.randint(width)), int(rng.randint(height)))
            axes = (int(rng.randint(5, width // 2)), int(rng.randint(5, height // 2)))
            start = float(rng.uniform(0, 360))
            cv2.ellipse(image, centre, axes, float(rng.uniform(0, 180)), start,
                        start + float(rng.uniform(30, 150)), colour, thickness, cv2.LINE_AA)


def random_shape(rng, class_id, height, width, size_range=(MIN_SIZE, MAX_SIZE)):
    """A shape of one class at a random place, mostly inside the image, colour not yet chosen.

    Args:
      rng: numpy.random.RandomState.
      class_id: 0 circle, 1 square, 2 triangle.
      height, width: image size in pixels.
      size_range: (low, high) size as fractions of the shorter side.

    Returns:
      A `Shape` with colour (0, 0, 0); at most ~20% of its extent lies outside the image.
    """
    low, high = ASPECT_RANGE[class_id]
    shape = Shape(class_id=int(class_id), cy=0.0, cx=0.0,
                  size=rng.uniform(size_range[0], size_range[1]) * min(height, width),
                  aspect=math.exp(rng.uniform(math.log(low), math.log(high))),
                  angle=rng.uniform(0.0, 2.0 * math.pi), colour=(0, 0, 0),
                  shade=_random_shade(rng))
    half = np.abs(shape_polygon(shape)).max(axis=0) * 0.8  # (x, y) half extents, allowed overhang
    cy = rng.uniform(half[1], height - half[1]) if height > 2 * half[1] else height / 2.0
    cx = rng.uniform(half[0], width - half[0]) if width > 2 * half[0] else width / 2.0
    return shape._replace(cy=cy, cx=cx)


def _random_shade(rng):
    angle = rng.uniform(0.0, 2.0 * math.pi)
    return (math.sin(angle), math.cos(angle), rng.uniform(0.0, 0.35))


def _bounding_box(shape, height, width):
    """Clipped integer pixel box (y0, x0, y1, x1) of a shape's polygon."""
    points = shape_polygon(shape)
    x0, y0 = np.clip(np.floor(points.min(axis=0)), 0, [width, height]).astype(int)
    x1, y1 = np.clip(np.ceil(points.max(axis=0)) + 1, 0, [width, height]).astype(int)
    return y0, x0, y1, x1


def _covers_too_much(box, earlier, limit=0.5):
    """True when `box` covers more than `limit` of any earlier box's area."""
    for other in earlier:
        ih = min(box[2], other[2]) - max(box[0], other[0])
        iw = min(box[3], other[3]) - max(box[1], other[1])
        area = max((other[2] - other[0]) * (other[3] - other[1]), 1)
        if ih > 0 and iw > 0 and ih * iw > limit * area:
            return True
    return False


def pick_colour(rng, under, avoid=()):
    """A BGR colour that stands out against the pixels it covers and against `avoid` colours.

    Args:
      rng: numpy.random.RandomState.
      under: float32 [P, 3] BGR pixels the shape will cover (a sample is enough).
      avoid: colours (B, G, R) of shapes it overlaps.

    Returns:
      (B, G, R) tuple of ints; the best of 12 tries if none reaches MIN_CONTRAST.
    """
    best, best_score = None, -1.0
    for _ in range(12):
        colour = rng.randint(0, 256, 3).astype(np.float32)
        score = float(np.sqrt(((under - colour) ** 2).sum(axis=1)).mean()) if len(under) else 441.0
        for other in avoid:
            score = min(score, float(np.linalg.norm(colour - np.asarray(other, np.float32))))
        if score > best_score:
            best, best_score = colour, score
        if score >= MIN_CONTRAST:
            break
    return tuple(int(v) for v in best)


def render_scene(rng, height, width, max_objects=6):
    """One random scene of 0..max_objects shapes on a textured background.

    Args:
      rng: numpy.random.RandomState (the only source of randomness: same seed, same scene).
      height: image height in pixels (>= 32).
      width: image width in pixels (>= 32).
      max_objects: most shapes painted; the count is uniform over 0..max_objects.

    Returns:
      (image, boxes, class_ids): image uint8 [height, width, 3] BGR; boxes float32 [K, 4]
      normalized [ymin, xmin, ymax, xmax], tight around each shape's visible pixels;
      class_ids int32 [K], 0-based indices into CLASS_NAMES.
    """
    if not hasattr(rng, "randint"):
        raise ValueError("expected a numpy.random.RandomState, got {}".format(type(rng).__name__))
    if height < 32 or width < 32:
        raise ValueError("expected height and width >= 32, got {}x{}".format(height, width))
    if max_objects < 0:
        raise ValueError("expected max_objects >= 0, got {}".format(max_objects))
    image = random_background(rng, height, width)
    shapes, placed = [], []
    for class_id in rng.randint(0, len(CLASS_NAMES), rng.randint(0, max_objects + 1)):
        for _ in range(8):  # a few tries to avoid burying an earlier shape
            shape = random_shape(rng, class_id, height, width)
            box = _bounding_box(shape, height, width)
            if not _covers_too_much(box, [b for b, _ in placed]):
                break
        else:
            continue
        under = image[box[0]:box[2]:3, box[1]:box[3]:3].reshape(-1, 3).astype(np.float32)
        avoid = [s.colour for s, (b, _) in zip(shapes, placed) if _covers_too_much(box, [b], 0.0)]
        shapes.append(shape._replace(colour=pick_colour(rng, under, avoid)))
        placed.append((box, class_id))
    boxes, class_ids, _ = compose(image, shapes)
    return _camera_noise(rng, image), boxes, class_ids


def _camera_noise(rng, image):
    """Sensor-like grain and, sometimes, a slight blur (moves edges by under a pixel)."""
    # Uniform integer grain: as good as Gaussian here, and a quarter of the cost.
    amplitude = int(rng.randint(0, 15))
    grain = rng.randint(0, 2 * amplitude + 1, image.shape, dtype=np.uint8)
    noisy = np.clip(image.astype(np.int16) + grain - amplitude, 0, 255).astype(np.uint8)
    if rng.rand() < 0.3:
        noisy = cv2.GaussianBlur(noisy, (3, 3), 0)
    return noisy


class MovingScene(object):
    """A few shapes drifting and bouncing over a fixed background: the app's `synthetic` camera.

    Shapes come from the training set's size range (MIN_SIZE..MAX_SIZE of the shorter side),
    so the demo model sees the camera as it saw its training data, up to the stretch from the
    frame's aspect to the model's.

    Args:
      width: frame width in pixels (>= 32).
      height: frame height in pixels (>= 32).
      seed: seed of the background, the shapes and their motion.
      num_shapes: shapes in the scene; None picks 2..4 (all three classes when 3 or more).
    """

    def __init__(self, width, height, seed=0, num_shapes=None):
        if height < 32 or width < 32:
            raise ValueError("expected width and height >= 32, got {}x{}".format(width, height))
        rng = np.random.RandomState(seed)
        self.width, self.height = int(width), int(height)
        self._background = random_background(rng, self.height, self.width)
        count = rng.randint(2, 5) if num_shapes is None else int(num_shapes)
        short = min(self.width, self.height)
        self._shapes, self._motion = [], []
        for i in range(count):
            class_id = i if i < len(CLASS_NAMES) else rng.randint(len(CLASS_NAMES))
            shape = random_shape(rng, class_id, self.height, self.width)  # the training sizes
            y0, x0, y1, x1 = _bounding_box(shape, self.height, self.width)
            under = self._background[y0:y1:3, x0:x1:3].reshape(-1, 3).astype(np.float32)
            avoid = [s.colour for s in self._shapes]
            self._shapes.append(shape._replace(colour=pick_colour(rng, under, avoid)))
            heading = rng.uniform(0.0, 2.0 * math.pi)
            speed = rng.uniform(0.004, 0.012) * short  # pixels per frame
            spin = 0.0 if class_id == 0 else rng.uniform(-0.03, 0.03)  # radians per frame
            self._motion.append((speed * math.sin(heading), speed * math.cos(heading), spin))
        self.frame_index = 0

    def next_frame(self):
        """The next frame and its ground truth, then moves every shape one step.

        Returns:
          (image, boxes, class_ids): uint8 [height, width, 3] BGR; float32 [K, 4] normalized
          [ymin, xmin, ymax, xmax] of the visible shapes; int32 [K] 0-based class ids.
        """
        return self.next_truth()[:3]

    def next_truth(self):
        """The next frame and its ground-truth tracks, then moves every shape one step.

        A shape keeps its track id (1-based, its place in the scene) for the whole run; in frames
        where it is more than MAX_HIDDEN hidden it has no box, like an occluded object.

        Returns:
          (image, boxes, class_ids, track_ids): as `next_frame`, plus int32 [K] track ids.
        """
        image = self._background.copy()
        boxes, class_ids, _, indices = _compose_indexed(image, self._shapes)
        self._step()
        self.frame_index += 1
        return image, boxes, class_ids, indices + 1

    def next_image(self):
        """The next frame alone (uint8 [height, width, 3] BGR), as `next_frame` paints it but
        without working out the boxes: what a camera delivers, at about half the cost."""
        image = self._background.copy()
        _paint_shapes(image, self._shapes)
        self._step()
        self.frame_index += 1
        return image

    def _step(self):
        for i, (shape, (vy, vx, spin)) in enumerate(zip(self._shapes, self._motion)):
            shape = shape._replace(cy=shape.cy + vy, cx=shape.cx + vx, angle=shape.angle + spin)
            half_x, half_y = np.abs(shape_polygon(shape._replace(cy=0.0, cx=0.0))).max(axis=0)
            # Bounce off the frame edge: reverse the velocity component heading outwards.
            if (shape.cy < half_y and vy < 0) or (shape.cy > self.height - half_y and vy > 0):
                vy = -vy
            if (shape.cx < half_x and vx < 0) or (shape.cx > self.width - half_x and vx > 0):
                vx = -vx
            self._shapes[i] = shape
            self._motion[i] = (vy, vx, spin)
