"""The one preprocessing definition shared by training, calibration, evaluation and the app.

A model input is an RGB image stretched to (height, width) (the OD API's
`fixed_shape_resizer`), then mapped linearly from uint8 [0, 255] onto the float
range the float model expects, `input_range` (edgedet trains on [-1, 1]).

The int8 model folds that linear map into its input quantization, so on the
live path the app copies uint8 pixels straight into the input tensor and never
does float maths. `expected_input_quantization` says what that quantization
must be; export checks it and the doctor diagnoses a mismatch with it.
"""

import numpy as np

# The float range every edgedet model is trained on. Stored in model.json so the
# app never guesses.
INPUT_RANGE = (-1.0, 1.0)

# How an image is stretched to the model input:
#   bilinear      half-pixel centres (cv2.INTER_LINEAR, tf.image.resize): what edgedet trains with;
#   bilinear_tf1  TF1 resize_images(align_corners=False), no half-pixel centres: the OD API's
#                 fixed_shape_resizer, so what OD API checkpoints were trained with.
RESIZE_METHODS = ("bilinear", "bilinear_tf1")


def _check_resize_args(image, method):
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected an [H, W, 3] image, got shape {}".format(image.shape))
    if method not in RESIZE_METHODS:
        raise ValueError("resize method must be one of {}, got {!r}".format(RESIZE_METHODS, method))


def _tf1_sources(out_size, in_size):
    """Source rows (or columns) of TF1's legacy bilinear scaler: lower, upper index and weight."""
    position = np.arange(out_size, dtype=np.float32) * np.float32(in_size / float(out_size))
    lower = np.floor(position)
    upper = np.minimum(np.ceil(position), in_size - 1).astype(np.int64)
    return lower.astype(np.int64), upper, (position - lower).astype(np.float32)


def resize_bilinear_tf1(image, height, width):
    """TF1 bilinear resize without half-pixel centres, in the order TensorFlow computes it.

    Args:
      image: uint8 or float [H, W, 3] array, any channel order.
      height: output height in pixels.
      width: output width in pixels.

    Returns:
      float32 [height, width, 3], not rounded (the OD API feeds these values to the model).
    """
    y0, y1, fy = _tf1_sources(height, image.shape[0])
    x0, x1, fx = _tf1_sources(width, image.shape[1])
    pixels = np.asarray(image, dtype=np.float32)
    fx = fx[None, :, None]
    top = pixels[y0][:, x0] + (pixels[y0][:, x1] - pixels[y0][:, x0]) * fx
    bottom = pixels[y1][:, x0] + (pixels[y1][:, x1] - pixels[y1][:, x0]) * fx
    return top + (bottom - top) * fy[:, None, None]


def resize_to_float(image, height, width, method="bilinear"):
    """Stretches an image to the model input size as float32 [height, width, 3] in [0, 255].

    `bilinear_tf1` keeps TensorFlow's unrounded values; `bilinear` is `resize_to_input` as float.
    """
    _check_resize_args(image, method)
    if method == "bilinear_tf1":
        return resize_bilinear_tf1(image, height, width)
    return resize_to_input(image, height, width).astype(np.float32)


def resize_to_input(image, height, width, method="bilinear"):
    """Stretches an image to the model input size (no letterbox, like training).

    Args:
      image: uint8 [H, W, 3] array in any channel order.
      height: model input height in pixels.
      width: model input width in pixels.
      method: one of RESIZE_METHODS.

    Returns:
      uint8 [height, width, 3] array, same channel order, bilinear.
    """
    import cv2

    _check_resize_args(image, method)
    if image.shape[0] == height and image.shape[1] == width:
        return image
    if method == "bilinear_tf1":
        return np.clip(np.round(resize_bilinear_tf1(image, height, width)), 0, 255).astype(np.uint8)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)


def bgr_to_rgb(image):
    """OpenCV's BGR order -> the RGB order models are trained on (a view-free copy)."""
    return np.ascontiguousarray(image[..., ::-1])


def normalize(pixels, input_range=INPUT_RANGE):
    """Maps uint8-valued pixels linearly from [0, 255] onto `input_range`.

    Uses arithmetic only, so it works on numpy arrays and on TensorFlow
    tensors alike; training's input pipeline calls this same function.

    Args:
      pixels: float array or tensor with values in [0, 255].
      input_range: (low, high) float range the float model expects.

    Returns:
      Same type as `pixels`, values in [low, high].
    """
    low, high = float(input_range[0]), float(input_range[1])
    return pixels * ((high - low) / 255.0) + low


def expected_input_quantization(input_range=INPUT_RANGE):
    """The uint8 (scale, zero_point) that maps raw pixels 0..255 onto `input_range`.

    For [-1, 1] that is (2/255, 127.5), which converters round to zero point 127 or 128.
    """
    low, high = float(input_range[0]), float(input_range[1])
    scale = (high - low) / 255.0
    return scale, -low / scale


def image_to_float_input(image_rgb, height, width, input_range=INPUT_RANGE, method="bilinear"):
    """RGB uint8 image -> float32 [1, height, width, 3] input for a float model (method: RESIZE_METHODS)."""
    return normalize(resize_to_float(image_rgb, height, width, method), input_range)[None]
