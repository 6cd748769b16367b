"""CPU latency of a .tflite detector on this host: the median of timed invokes on one thread."""

import time

import numpy as np

from training import evaluate
from training.tflite_model import TfliteModel

WARMUP_INVOKES = 5  # the first invokes allocate and fault in pages; they are not timed


def median_invoke_ms(path, image_rgb, spec, invokes=100, num_threads=1):
    """Median wall time of one TfliteModel.invoke in milliseconds (set input, invoke, read outputs).

    Args:
      path: .tflite with raw SSD outputs (float or full-integer).
      image_rgb: RGB uint8 [H, W, 3], a real eval image (prepared as the app prepares it).
      spec: evaluate.ModelSpec of the model (input size, float range, resize).
      invokes: timed invokes, >= 1.
      num_threads: interpreter threads.

    Returns:
      float, milliseconds.
    """
    if invokes < 1:
        raise ValueError("invokes must be >= 1, got {}".format(invokes))
    model = TfliteModel(path, num_threads=num_threads)
    x = evaluate.model_input(image_rgb, spec, model.input_dtype, model.input_quantization)
    for _ in range(WARMUP_INVOKES):
        model.invoke(x)
    times = []
    for _ in range(invokes):
        start = time.perf_counter()
        model.invoke(x)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))
