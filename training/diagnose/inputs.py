"""Findings about the input: does the uint8 input mean what the float model expects?

A full-integer model's input quantization (scale, zero_point) says which real
interval the codes 0..255 stand for. The converter sets it from the min/max of the
representative dataset, so it records how the calibration images were normalized.
If that interval is not the float model's input range, every activation range was
calibrated on inputs the network never saw in training.
"""

import numpy as np

from training.diagnose.findings import finding

# Normalizations people write in representative datasets: name, interval of 0..255, code.
KNOWN_NORMALIZATIONS = (
    ("raw 0..255 pixels (no normalization)", (0.0, 255.0), "img.astype(np.float32)"),
    ("pixels / 255", (0.0, 1.0), "img.astype(np.float32) / 255.0"),
    ("pixels / 127.5 - 1", (-1.0, 1.0), "img.astype(np.float32) / 127.5 - 1.0"),
    ("pixels - 128", (-128.0, 127.0), "img.astype(np.float32) - 128.0"),
)
RANGE_RTOL = 0.05  # of the expected span: converters round zero points by one step
MIN_CODES = 16  # fewer input codes inside the range than this cannot carry an image


def _dtype_codes(dtype):
    return (-128, 127) if np.dtype(dtype) == np.int8 else (0, 255)


def quant_input_interval(quant_model):
    """The real interval the quantized model's input codes stand for.

    Returns:
      (low, high, (scale, zero_point), dtype name, where) or None when the input is
      float and no QUANTIZE op follows it. `where` says which tensor carried it.
    """
    if quant_model.input_quantization is not None:
        scale, zero = quant_model.input_quantization
        lo, hi = _dtype_codes(quant_model.input_dtype)
        return ((lo - zero) * scale, (hi - zero) * scale, (scale, zero), quant_model.input_dtype.name,
                "input tensor")
    details = {d["index"]: d for d in quant_model.interp.get_tensor_details()}
    for op in quant_model.interp._get_ops_details():
        if op["op_name"] == "QUANTIZE" and quant_model.input["index"] in list(op["inputs"]):
            d = details[int(op["outputs"][0])]
            scale, zero = d["quantization"]
            lo, hi = _dtype_codes(d["dtype"])
            return ((lo - zero) * scale, (hi - zero) * scale, (float(scale), int(zero)),
                    np.dtype(d["dtype"]).name, "QUANTIZE op after the float input")
    return None


def normalization_name(interval):
    """The known normalization whose interval matches `interval`, or a description of it."""
    span = interval[1] - interval[0]
    for name, (lo, hi), _ in KNOWN_NORMALIZATIONS:
        if abs(interval[0] - lo) <= RANGE_RTOL * span and abs(interval[1] - hi) <= RANGE_RTOL * span:
            return name
    return "a normalization mapping pixels 0..255 onto [{:.4g}, {:.4g}]".format(*interval)


def representative_code(float_range):
    """The representative-dataset line that produces `float_range`, as Python code."""
    lo, hi = float_range
    for _, interval, expr in KNOWN_NORMALIZATIONS:
        if interval == (float(lo), float(hi)):
            break
    else:
        expr = "img.astype(np.float32) * {:.6g} + {:.6g}".format((hi - lo) / 255.0, lo)
    return "yield [({})[None]]".format(expr)


def matches_range(interval, float_range):
    span = float_range[1] - float_range[0]
    return all(abs(a - b) <= RANGE_RTOL * span for a, b in zip(interval, float_range))


def _codes_inside(quant, dtype, float_range):
    scale, zero = quant
    lo, hi = _dtype_codes(dtype)
    real = (np.arange(lo, hi + 1) - zero) * scale
    return int(np.count_nonzero((real >= float_range[0] - 1e-6) & (real <= float_range[1] + 1e-6)))


def input_findings(quant_model, float_range, confirmation=None):
    """calibration_input_range and input_quantization_mismatch.

    Args:
      quant_model: TfliteRunner of the quantized model.
      float_range: (low, high) the float model expects.
      confirmation: optional (error_implied, error_expected): relative RMS error of the
        quantized outputs against the float model fed the implied interval / the expected range.

    Returns:
      list of findings (possibly empty).
    """
    found = quant_input_interval(quant_model)
    if found is None:
        return []
    lo, hi, quant, dtype, where = found
    findings = []
    if not matches_range((lo, hi), float_range):
        findings.append(_calibration_finding((lo, hi), quant, where, float_range, confirmation))
    inside = _codes_inside(quant, dtype, float_range)
    if inside < MIN_CODES:
        findings.append(finding(
            "input_quantization_mismatch", "error",
            "the {} input quantization cannot represent the range [{:g}, {:g}]".format(dtype, *float_range),
            "With scale {:.6g} and zero point {}, only {} of the 256 input codes fall inside [{:g}, {:g}], "
            "so an image in the float model's range reaches the network as {} grey level(s).".format(
                quant[0], quant[1], inside, float_range[0], float_range[1], inside),
            "Re-convert with representative data in [{:g}, {:g}]: {}; the input then gets scale "
            "{:.6g}.".format(float_range[0], float_range[1], representative_code(float_range),
                             (float_range[1] - float_range[0]) / 255.0),
            {"scale": quant[0], "zero_point": quant[1], "codes_inside": inside}))
    return findings


def _calibration_finding(interval, quant, where, float_range, confirmation):
    used = normalization_name(interval)
    want_scale = (float_range[1] - float_range[0]) / 255.0
    want_zero = -float_range[0] / want_scale
    detail = ("The {} quantization (scale {:.6g}, zero point {}) maps uint8 0..255 onto [{:.4g}, {:.4g}], "
              "but the float model expects [{:g}, {:g}]: the representative dataset yielded {} "
              "instead of the model's normalization, so every activation range was calibrated on "
              "inputs the network never saw. Expected about (scale {:.6g}, zero point {:.4g})."
              .format(where, quant[0], quant[1], interval[0], interval[1], float_range[0],
                      float_range[1], used, want_scale, want_zero))
    evidence = {"input_interval": [interval[0], interval[1]], "scale": quant[0], "zero_point": quant[1],
                "expected_range": list(float_range), "calibration_normalization": used}
    if confirmation is not None:
        detail += (" Confirmed: the quantized outputs differ by {:.0%} (relative RMS) from the float model "
                   "fed [{:.4g}, {:.4g}] and by {:.0%} from it fed [{:g}, {:g}].".format(
                       confirmation[0], interval[0], interval[1], confirmation[1], *float_range))
        evidence["error_vs_implied"], evidence["error_vs_expected"] = confirmation
    fix = ("calibrate with the model's normalization, {} (img = RGB uint8 stretched to the input size), "
           "or train quantization-aware (edgedet-train train), which carries its learned input range"
           .format(representative_code(float_range)))
    title = "calibration used {} but the model expects [{:g}, {:g}]".format(used, *float_range)
    return finding("calibration_input_range", "error", title, detail, fix, evidence)
