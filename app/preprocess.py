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


def resize_to_input(image, height, width):
    """Stretches an image to the model input size (no letterbox, like training).

    Args:
      image: uint8 [H, W, 3] array in any channel order.
      height: model input height in pixels.
      width: model input width in pixels.

    Returns:
      uint8 [height, width, 3] array, same channel order, bilinear.
    """
    import cv2

    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("expected an [H, W, 3] image, got shape {}".format(image.shape))
    if image.shape[0] == height and image.shape[1] == width:
        return image
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


def image_to_float_input(image_rgb, height, width, input_range=INPUT_RANGE):
    """RGB uint8 image -> float32 [1, height, width, 3] input for a float model."""
    resized = resize_to_input(image_rgb, height, width).astype(np.float32)
    return normalize(resized, input_range)[None]
