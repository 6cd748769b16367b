"""SSD anchors: the OD API `ssd_anchor_generator`, in numpy. The only anchor maths in edgedet.

Training builds its targets from these anchors, export writes them to
`anchors.npy`, and the app decodes against that file, so all three agree by
construction.

Semantics (OD API `create_ssd_anchors` + `MultipleGridAnchorGenerator`, with the
image size equal to the model input size):
  * layer scales s_i = min_scale + (max_scale - min_scale) * i / (num_layers - 1),
    followed by 1.0 so the last layer has a "next" scale;
  * each layer has a list of (scale, aspect ratio) box kinds: the lowest layer
    optionally uses the fixed three [(0.1, 1.0), (s_0, 2.0), (s_0, 0.5)], every
    other layer uses (s_i, ar) for each ar plus (sqrt(s_i * s_{i+1}), interpolated_ar);
  * the base size is scaled by (min(H, W) / H, min(H, W) / W), so an aspect ratio
    1 anchor is square in pixels on a non-square input;
  * a box kind of scale s and aspect ratio ar (width / height) is
    h = s * base_h / sqrt(ar), w = s * base_w * sqrt(ar);
  * centres sit on a (gh, gw) grid with stride (1/gh, 1/gw) and half a stride of offset;
  * order: layer -> grid row -> grid column -> box kind.
"""

import math

import numpy as np

DEFAULT_ASPECT_RATIOS = (1.0, 2.0, 0.5, 3.0, 0.3333)


def feature_map_shapes(input_height, input_width, num_layers=6, first_stride=16):
    """Grid sizes of the anchor-carrying feature maps of SSD-MobileNetV2.

    Convolutions with SAME padding round up, so every grid is a ceil division:
    the first is (ceil(H / first_stride), ceil(W / first_stride)) and each next one
    halves the previous, rounding up (514x614 -> 33x39, 17x20, 9x10, 5x5, 3x3, 2x2).

    Args:
      input_height: model input height in pixels, > 0.
      input_width: model input width in pixels, > 0.
      num_layers: number of feature maps, >= 1.
      first_stride: stride in pixels of the first feature map, >= 1.

    Returns:
      List of `num_layers` (grid_height, grid_width) int tuples.
    """
    for name, value, low in (("input_height", input_height, 1), ("input_width", input_width, 1),
                             ("num_layers", num_layers, 1), ("first_stride", first_stride, 1)):
        if int(value) != value or value < low:
            raise ValueError("{} must be an integer >= {}, got {!r}".format(name, low, value))
    h = -(-int(input_height) // int(first_stride))
    w = -(-int(input_width) // int(first_stride))
    shapes = [(h, w)]
    for _ in range(int(num_layers) - 1):
        h, w = -(-h // 2), -(-w // 2)
        shapes.append((h, w))
    return shapes


def _layer_scales(num_layers, min_scale, max_scale):
    """s_0..s_{L-1} evenly spaced in [min_scale, max_scale], then 1.0."""
    if num_layers == 1:
        return [float(min_scale), 1.0]
    step = (max_scale - min_scale) / float(num_layers - 1)
    return [min_scale + step * i for i in range(num_layers)] + [1.0]


def box_specs(num_layers=6, min_scale=0.2, max_scale=0.95, aspect_ratios=DEFAULT_ASPECT_RATIOS,
              interpolated_scale_aspect_ratio=1.0, reduce_boxes_in_lowest_layer=True):
    """The (scale, aspect_ratio) box kinds of every layer, in the OD API order.

    Returns:
      List of `num_layers` lists of (scale, aspect_ratio) float pairs; aspect ratio
      is width / height.
    """
    if num_layers < 1:
        raise ValueError("num_layers must be >= 1, got {!r}".format(num_layers))
    if not aspect_ratios or min(aspect_ratios) <= 0:
        raise ValueError("aspect_ratios must be a non-empty list of positive numbers, got {!r}"
                         .format(aspect_ratios))
    if not 0 < min_scale <= max_scale:
        raise ValueError("expected 0 < min_scale <= max_scale, got min_scale={!r} max_scale={!r}"
                         .format(min_scale, max_scale))
    scales = _layer_scales(num_layers, float(min_scale), float(max_scale))
    specs = []
    for layer in range(num_layers):
        scale, next_scale = scales[layer], scales[layer + 1]
        if layer == 0 and reduce_boxes_in_lowest_layer:
            specs.append([(0.1, 1.0), (scale, 2.0), (scale, 0.5)])
            continue
        kinds = [(scale, float(ar)) for ar in aspect_ratios]
        if interpolated_scale_aspect_ratio > 0:
            kinds.append((math.sqrt(scale * next_scale), float(interpolated_scale_aspect_ratio)))
        specs.append(kinds)
    return specs


def anchors_per_location(num_layers, aspect_ratios, interpolated_scale_aspect_ratio=1.0,
                         reduce_boxes_in_lowest_layer=True):
    """Anchors per grid cell for each layer (the box predictor's output depth / 4).

    Returns:
      List of `num_layers` ints.
    """
    specs = box_specs(num_layers, 0.2, 0.95, aspect_ratios, interpolated_scale_aspect_ratio,
                      reduce_boxes_in_lowest_layer)
    return [len(kinds) for kinds in specs]


def _tile(grid, kinds, base_h, base_w):
    """Anchors of one layer: float64 [gh * gw * K, 4] (yc, xc, h, w), row -> col -> kind."""
    gh, gw = grid
    scales = np.array([s for s, _ in kinds], dtype=np.float64)
    ratio_sqrts = np.sqrt(np.array([ar for _, ar in kinds], dtype=np.float64))
    heights = scales / ratio_sqrts * base_h
    widths = scales * ratio_sqrts * base_w
    y_centers = (np.arange(gh, dtype=np.float64) + 0.5) / gh
    x_centers = (np.arange(gw, dtype=np.float64) + 0.5) / gw
    k = len(kinds)
    yc = np.broadcast_to(y_centers[:, None, None], (gh, gw, k))
    xc = np.broadcast_to(x_centers[None, :, None], (gh, gw, k))
    hh = np.broadcast_to(heights[None, None, :], (gh, gw, k))
    ww = np.broadcast_to(widths[None, None, :], (gh, gw, k))
    return np.stack([yc, xc, hh, ww], axis=-1).reshape(-1, 4)


def ssd_anchors(input_height, input_width, num_layers=6, min_scale=0.2, max_scale=0.95,
                aspect_ratios=DEFAULT_ASPECT_RATIOS, interpolated_scale_aspect_ratio=1.0,
                reduce_boxes_in_lowest_layer=True, base_anchor_size=(1.0, 1.0)):
    """All SSD anchors for a model input size (see the module docstring for the rules).

    Args:
      input_height: model input height in pixels.
      input_width: model input width in pixels.
      num_layers: feature maps carrying anchors.
      min_scale: scale of the first layer, a fraction of the shorter input side.
      max_scale: scale of the last layer.
      aspect_ratios: width / height ratios used at every layer but a reduced first one.
      interpolated_scale_aspect_ratio: aspect ratio of the extra anchor at
        sqrt(s_i * s_{i+1}); 0 or less disables it.
      reduce_boxes_in_lowest_layer: first layer uses the fixed three box kinds.
      base_anchor_size: (height, width) before scaling, normalized.

    Returns:
      float32 [N, 4] anchors (ycenter, xcenter, height, width), normalized to the
      input, ordered layer -> grid row -> grid column -> box kind.
    """
    if len(base_anchor_size) != 2 or min(base_anchor_size) <= 0:
        raise ValueError("base_anchor_size must be (height, width) > 0, got {!r}"
                         .format(base_anchor_size))
    grids = feature_map_shapes(input_height, input_width, num_layers)
    specs = box_specs(num_layers, min_scale, max_scale, aspect_ratios,
                      interpolated_scale_aspect_ratio, reduce_boxes_in_lowest_layer)
    # Scaling the base by min side / side keeps anchors square in pixels on non-square inputs.
    short_side = float(min(input_height, input_width))
    base_h = base_anchor_size[0] * short_side / input_height
    base_w = base_anchor_size[1] * short_side / input_width
    layers = [_tile(grid, kinds, base_h, base_w) for grid, kinds in zip(grids, specs)]
    return np.concatenate(layers, axis=0).astype(np.float32)


def anchors_from_config(model_cfg):
    """`ssd_anchors` for a training.config.ModelConfig-like object (duck-typed).

    Args:
      model_cfg: object with .input_height, .input_width and .anchors having
        num_layers, min_scale, max_scale, aspect_ratios,
        interpolated_scale_aspect_ratio, reduce_boxes_in_lowest_layer,
        base_anchor_height, base_anchor_width.

    Returns:
      float32 [N, 4] anchors (ycenter, xcenter, height, width), normalized.
    """
    a = model_cfg.anchors
    return ssd_anchors(
        model_cfg.input_height, model_cfg.input_width,
        num_layers=a.num_layers, min_scale=a.min_scale, max_scale=a.max_scale,
        aspect_ratios=tuple(a.aspect_ratios),
        interpolated_scale_aspect_ratio=a.interpolated_scale_aspect_ratio,
        reduce_boxes_in_lowest_layer=a.reduce_boxes_in_lowest_layer,
        base_anchor_size=(a.base_anchor_height, a.base_anchor_width))
