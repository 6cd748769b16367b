"""report.html: one self-contained page showing what the export measured.

Float vs int8 detections side by side on a few eval images, the PR curve per
class, the input/output quantization, and the Edge TPU preflight/compiler table.
Images are inline base64 JPEG and the curves inline SVG, so the file opens anywhere.
"""

import base64
import html

import numpy as np

from app.outputs.overlay import draw_detections
from app.model.postprocess import to_pixel_boxes

CURVE_SIZE = (260, 200)  # SVG plot width, height in px


def _esc(value):
    return html.escape(str(value))


def _fmt(value, digits=4):
    return "-" if value is None else ("{:.%df}" % digits).format(value)


def _table(header, rows):
    head = "".join("<th>{}</th>".format(_esc(h)) for h in header)
    body = "".join("<tr>{}</tr>".format("".join("<td>{}</td>".format(_esc(c)) for c in row)) for row in rows)
    return "<table><tr>{}</tr>{}</table>".format(head, body)


def _jpeg_data_uri(image_bgr):
    import cv2
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise RuntimeError("cv2.imencode failed on a report image")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _drawn(image_rgb, dets, labels):
    """A BGR copy of the image with detections drawn in source pixels."""
    image = np.ascontiguousarray(image_rgb[..., ::-1])
    boxes = to_pixel_boxes(dets.boxes, image.shape[0], image.shape[1])
    draw_detections(image, boxes, dets.class_ids, dets.scores, [labels[int(c)] for c in dets.class_ids])
    return image


def side_by_side(images_rgb, float_dets, int8_dets, labels):
    """HTML rows: each eval image with float detections left and int8 detections right."""
    rows = []
    for i, (image, f, q) in enumerate(zip(images_rgb, float_dets, int8_dets)):
        rows.append('<div class="pair"><figure><img src="{}"><figcaption>#{} float: {} boxes</figcaption>'
                    '</figure><figure><img src="{}"><figcaption>#{} int8: {} boxes</figcaption></figure></div>'
                    .format(_jpeg_data_uri(_drawn(image, f, labels)), i, len(f.scores),
                            _jpeg_data_uri(_drawn(image, q, labels)), i, len(q.scores)))
    return "\n".join(rows)


def _polyline(recall, precision, colour):
    w, h = CURVE_SIZE
    points = ["{:.1f},{:.1f}".format(30 + r * (w - 40), 10 + (1 - p) * (h - 40))
              for r, p in zip(recall, precision) if p >= 0]
    if not points:
        return ""
    return '<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(colour, " ".join(points))


def pr_curve_svg(title, recall, float_precision, int8_precision):
    """One class's precision-recall curves at IoU 0.5 (float blue, int8 orange) as inline SVG."""
    w, h = CURVE_SIZE
    axes = ('<rect x="30" y="10" width="{}" height="{}" fill="#fafafa" stroke="#999"/>'
            '<text x="30" y="{}" font-size="11">0</text><text x="{}" y="{}" font-size="11">recall 1</text>'
            '<text x="2" y="18" font-size="11">1</text><text x="{}" y="{}" font-size="12">{}</text>'
            .format(w - 40, h - 40, h - 16, w - 60, h - 16, w / 2 - 30, h - 2, _esc(title)))
    return '<svg width="{}" height="{}">{}{}{}</svg>'.format(
        w, h, axes, _polyline(recall, float_precision, "#1f77b4"), _polyline(recall, int8_precision, "#ff7f0e"))


def _metrics_table(fid, labels):
    rows = [["mAP@[.5:.95]", _fmt(fid["float"]["map"]), _fmt(fid["int8"]["map"]), _fmt(fid["ratio"], 3)],
            ["mAP@0.5", _fmt(fid["float"]["map50"]), _fmt(fid["int8"]["map50"]), _fmt(fid.get("ratio50"), 3)],
            ["detection agreement", "", "", _fmt(fid["agreement"], 3)]]
    for f, q in zip(fid["float"]["per_class"], fid["int8"]["per_class"]):
        rows.append(["AP " + labels[f["class_id"]], _fmt(f["ap"]), _fmt(q["ap"]), ""])
    return _table(["metric", "float", "int8", "int8/float"], rows)


def _quant_table(quant, expected):
    rows = [["input " + quant["input"]["name"], quant["input"]["dtype"], quant["input"]["shape"],
             "{:.6g}".format(quant["input"]["scale"]), quant["input"]["zero_point"]]]
    rows += [["output " + o["name"], o["dtype"], o["shape"], "{:.6g}".format(o["scale"]), o["zero_point"]]
             for o in quant["outputs"]]
    rows.append(["expected input", "uint8", "", "{:.6g}".format(expected[0]), "{:g}".format(expected[1])])
    return _table(["tensor", "dtype", "shape", "scale", "zero point"], rows)


def _edgetpu_section(edgetpu):
    pre, comp = edgetpu.get("preflight") or {}, edgetpu.get("compiler")
    parts = []
    if comp and comp.get("available"):
        keys = ("compiler_version", "ops_on_tpu", "ops_on_cpu", "subgraphs", "on_chip_memory_used_bytes",
                "off_chip_memory_used_bytes")
        parts.append("<h3>edgetpu_compiler</h3>" + _table(["field", "value"], [[k, comp.get(k, "-")] for k in keys]))
        attached = comp.get("attached")
        if attached:
            parts.append("<p>model_int8_edgetpu.tflite was compiled elsewhere and attached with "
                         "<code>edgedet-train attach-edgetpu</code> from {} (sha256 {}); compiler output: {}</p>"
                         .format(_esc(attached["from"]), _esc(attached["sha256"]),
                                 _esc(attached.get("log") or "not given")))
    elif comp:
        parts.append("<p>{}</p>".format(_esc(comp.get("how_to_get", "compiler not run"))))
    if pre:
        parts.append("<h3>Preflight (predicted Edge TPU mapping)</h3>" + _table(
            ["ops total", "on TPU", "on CPU", "TPU subgraphs"],
            [[pre.get("ops_total"), pre.get("ops_on_tpu"), pre.get("ops_on_cpu"), pre.get("subgraphs")]]))
        if pre.get("cpu_ops"):
            parts.append(_table(["op index", "op", "why on CPU"],
                                [[c["index"], c["op"], c["reason"]] for c in pre["cpu_ops"]]))
        for line in (pre.get("problems") or []) + (pre.get("warnings") or []):
            parts.append("<p class=warn>{}</p>".format(_esc(line)))
    return "\n".join(parts) or "<p>no Edge TPU information</p>"


EDGETPU_HEADING = "<h2>Edge TPU</h2>"
PAGE_END = "</body></html>"


def replace_edgetpu_section(page, edgetpu):
    """The page with its Edge TPU section (the last one) rendered anew from `edgetpu`.

    Args:
      page: a report.html written by `render_html`.
      edgetpu: model.json's "edgetpu" dict ({"preflight", "compiler"}).

    Returns:
      str, or None when the page has no Edge TPU section to replace.
    """
    start = page.rfind(EDGETPU_HEADING)
    end = page.rfind(PAGE_END)
    if start < 0 or end < start:
        return None
    return page[:start] + EDGETPU_HEADING + _edgetpu_section(edgetpu) + page[end:]


STYLE = ("body{font-family:sans-serif;margin:16px;max-width:1200px}table{border-collapse:collapse;margin:8px 0}"
         "td,th{border:1px solid #bbb;padding:3px 8px;font-size:13px}.pair{display:inline-flex;gap:6px;"
         "margin:4px 12px 8px 0}figure{margin:0}figcaption{font-size:12px}img{width:260px}"
         ".ok{color:#080}.bad{color:#b00}.warn{color:#a60}svg{margin-right:8px}")


def _calibration_note(calibration):
    """", calibrated on 200 train images" (older reports record no calibration: "")."""
    if not calibration:
        return ""
    return ", calibrated on {} {} images".format(calibration["num_images"], _esc(calibration["split"]))


def _doctor_section(doctor):
    """The rejected bundle's diagnosis: the doctor's headline and links to its files."""
    if not doctor:
        return ""
    if "error" in doctor:
        return "<h2>Why (edgedet-train doctor)</h2><p class='warn'>the doctor failed: {}</p>".format(
            _esc(doctor["error"]))
    return ("<h2>Why (edgedet-train doctor)</h2><p class='{cls}'>{line}</p><p>every finding with its "
            "evidence and fix: <a href='{json}'>{json}</a> (readable: <a href='{text}'>{text}</a>)</p>"
            .format(cls="bad" if doctor["has_error"] else "warn", line=_esc(doctor["headline"]),
                    json=_esc(doctor["json"]), text=_esc(doctor["text"])))


def render_html(report, labels, images_rgb, float_dets, int8_dets):
    """The whole page as a string.

    Args:
      report: the report.json dict (fidelity, quantization, edgetpu, name; optional doctor).
      labels: class names.
      images_rgb: 6-8 eval images, RGB uint8.
      float_dets, int8_dets: live-threshold Detections for those images.
    """
    fid = report["fidelity"]
    verdict = ('<p class="ok">PASSED the fidelity gate</p>' if fid["passed"] else
               '<p class="bad">REJECTED: {}</p>'.format(_esc("; ".join(fid["reasons"]))))
    curves = fid.get("pr_curve") or {}
    svgs = ["<p>no detections at the eval score threshold, so no curve</p>"]
    if curves.get("float") and curves.get("int8"):
        svgs = []
        for k, name in enumerate(labels):
            svgs.append(pr_curve_svg(name, curves["float"]["recall"], curves["float"]["precision"][k],
                                     curves["int8"]["precision"][k]))
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgedet export {name}</title>"
            "<style>{style}</style></head><body><h1>edgedet export: {name}</h1>{verdict}{doctor}"
            "<p>{n} eval images{calibration}; gate: int8 mAP &ge; (1 - {drop}) &times; float mAP, agreement &ge; {agree}; "
            "created {created}; quantization-aware: {qat}</p><h2>Float vs int8</h2>{metrics}"
            "<h2>Detections (left float, right int8; live thresholds)</h2>{pairs}"
            "<h2>Precision-recall at IoU 0.5 (blue float, orange int8)</h2>{svgs}"
            "<h2>Quantization (model_int8.tflite)</h2>{quant}{heading}{edgetpu}{end}"
            .format(name=_esc(report["name"]), style=STYLE, verdict=verdict, n=fid["num_images"],
                    calibration=_calibration_note(fid.get("calibration")),
                    doctor=_doctor_section(report.get("doctor")),
                    drop=fid["max_drop"], agree=fid["min_agreement"], created=_esc(report["created"]),
                    qat=report["quantization_aware"], metrics=_metrics_table(fid, labels),
                    pairs=side_by_side(images_rgb, float_dets, int8_dets, labels), svgs="".join(svgs),
                    quant=_quant_table(report["quantization"], report["expected_input_quantization"]),
                    heading=EDGETPU_HEADING, edgetpu=_edgetpu_section(report.get("edgetpu") or {}),
                    end=PAGE_END))
