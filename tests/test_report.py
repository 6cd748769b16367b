"""report.html: self-contained page with pictures, PR curves, quantization and Edge TPU tables."""

import numpy as np

from app.model.postprocess import Detections
from training import report


def _dets(boxes, scores, classes):
    return Detections(np.array(boxes, np.float32).reshape(-1, 4), np.array(scores, np.float32),
                      np.array(classes, np.int32))


def _report(passed):
    per_class = [{"class_id": k, "ap": 0.5, "ap50": 0.8} for k in range(2)]
    curve = {"recall": [i / 100.0 for i in range(101)], "precision": [[1.0] * 101, [0.5] * 50 + [-1] * 51]}
    return {"name": "demo", "created": "now", "quantization_aware": True,
            "fidelity": {"float": {"map": 0.61, "map50": 0.93, "per_class": per_class},
                         "int8": {"map": 0.60, "map50": 0.92, "per_class": per_class},
                         "ratio": 0.6 / 0.61, "ratio50": 0.92 / 0.93, "agreement": 0.97, "max_drop": 0.02,
                         "min_agreement": 0.6, "num_images": 200, "passed": passed,
                         "reasons": [] if passed else ["int8 mAP 0.1 < 0.59"],
                         "pr_curve": {"float": curve, "int8": curve}},
            "quantization": {"input": {"name": "in", "dtype": "uint8", "shape": [1, 8, 8, 3],
                                       "scale": 2 / 255.0, "zero_point": 127},
                             "outputs": [{"name": "out0", "dtype": "uint8", "shape": [1, 4, 4],
                                          "scale": 0.04, "zero_point": 121}]},
            "expected_input_quantization": [2 / 255.0, 127.5],
            "edgetpu": {"preflight": {"ops_total": 99, "ops_on_tpu": 98, "ops_on_cpu": 1, "subgraphs": 1,
                                      "cpu_ops": [{"index": 98, "op": "DEQUANTIZE", "reason": "float output"}]},
                        "compiler": {"available": False, "how_to_get": "apt install edgetpu-compiler"}}}


def test_page_holds_every_section_self_contained():
    images = [np.full((60, 80, 3), 90, np.uint8) for _ in range(3)]
    dets = [_dets([[0.1, 0.1, 0.5, 0.5]], [0.9], [1])] * 3
    page = report.render_html(_report(True), ["circle", "square"], images, dets, dets)
    assert page.count("data:image/jpeg;base64,") == 6  # 3 float + 3 int8 pictures, inline
    assert page.count("<svg") == 2 and page.count("<polyline") == 4  # 2 classes x (float, int8)
    assert "PASSED" in page and "0.6100" in page and "0.9836" not in page and "0.984" in page
    assert "0.00784314" in page and "127.5" in page and "DEQUANTIZE" in page and "float output" in page
    assert "src=\"http" not in page and "<script" not in page


def test_rejected_page_says_why_and_curve_skips_undefined_points():
    page = report.render_html(_report(False), ["circle", "square"], [], [], [])
    assert "REJECTED: int8 mAP 0.1 &lt; 0.59" in page
    second = report.pr_curve_svg("square", [i / 100.0 for i in range(101)], [0.5] * 50 + [-1] * 51, [])
    assert second.count("points=") == 1 and second.split('points="')[1].count(",") == 50
