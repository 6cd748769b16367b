"""layer_error_blowup: the first layer where the quantized model parts from the float one.

Both .tflite files are re-run with `experimental_preserve_all_tensors`, every op
output is dequantized, and tensors are matched by name (converters keep the
SavedModel's op names in both files). The relative error of each matched tensor,
in the quantized model's execution order, shows where the error appears: at the
first layer (an input problem), at one layer (its range or an op that quantizes
badly), or growing slowly (accumulated rounding; QAT helps).
"""

import numpy as np

from training.diagnose.findings import finding
from training.diagnose.runner import TfliteRunner

BLOWUP = 0.3  # relative RMS error that is no longer rounding
SEVERE = 0.6


def relative_errors(pair, image_rgb, float_range):
    """[(tensor name, op, relative RMS error, float [min, max], quant [min, max])] in execution order.

    Args:
      pair: diagnose.pair.Pair.
      image_rgb: RGB uint8 [H, W, 3] image.
      float_range: (low, high) fed to the float model.
    """
    sides = []
    for runner in (pair.float_model, pair.quant_model):
        debug = TfliteRunner(runner.content, runner.label, preserve_all_tensors=True)
        debug.run(image_rgb, float_range)
        sides.append(debug.tensors())
    float_by_name = {name: values for name, _, values in sides[0]}
    rows = []
    for name, op, q in sides[1]:
        f = float_by_name.get(name)
        if f is None or f.shape != q.shape or op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        err = float(np.sqrt(np.mean((q - f) ** 2)) / (np.sqrt(np.mean(f ** 2)) + 1e-6))
        rows.append((name, op, err, [float(f.min()), float(f.max())], [float(q.min()), float(q.max())]))
    return rows


def layer_error_blowup(rows):
    """Finding for the first matched tensor whose relative error reaches BLOWUP, if any.

    Args:
      rows: output of `relative_errors`.
    """
    if not rows:
        return []
    crossing = next((i for i, r in enumerate(rows) if r[2] >= BLOWUP), None)
    if crossing is None:
        return []
    name, op, err, f_range, q_range = rows[crossing]
    before = rows[crossing - 1][2] if crossing else 0.0
    final = rows[-1][2]
    position = "the first matched layer" if crossing == 0 else "layer {} of {}".format(crossing + 1, len(rows))
    detail = ("Relative error of the quantized tensors against the float ones (matched by name, {} tensors): "
              "{:.2f} before, {:.2f} at {} '{}' ({}), {:.2f} at the last matched tensor. There the float "
              "values span [{:.3g}, {:.3g}] and the quantized ones [{:.3g}, {:.3g}].".format(
                  len(rows), before, err, position, name, op, final, f_range[0], f_range[1],
                  q_range[0], q_range[1]))
    if crossing == 0:
        fix = "the error is there from the first layer: the input itself differs (see the input findings)"
    else:
        fix = ("check this layer's range in the calibration data; keep it in float or train "
               "quantization-aware (edgedet-train train) if one op quantizes badly")
    return [finding("layer_error_blowup", "error" if max(err, final) >= SEVERE else "warning",
                    "quantization error jumps at {} ({})".format(position, op), detail, fix,
                    {"tensor": name, "op": op, "index": crossing, "error": err, "error_before": before,
                     "error_final": final, "matched_tensors": len(rows),
                     "errors": [round(r[2], 4) for r in rows]})]
