"""compare.html: the comparison's table and every model's precision-recall curves on one plot.

One self-contained page (inline SVG, no scripts, no network), rendered from compare.json.
"""

import html

from training.report import STYLE, _fmt, _table

PLOT_SIZE = (520, 360)    # SVG width, height in px
PLOT_MARGIN = (50, 20)    # left, top: room for the axis labels
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def class_mean_precision(curve):
    """[(recall, precision)] with precision averaged over the classes defined at that recall.

    Args:
      curve: {"recall": [R], "precision": [C][R]} at IoU 0.5, -1 where undefined
        (training.evaluate.coco_metrics). Its area is about the mAP@0.5.
    """
    points = []
    for i, r in enumerate(curve["recall"]):
        values = [p[i] for p in curve["precision"] if p[i] >= 0]
        if values:
            points.append((r, sum(values) / len(values)))
    return points


def _polyline(points, colour, dashed):
    (w, h), (left, top) = PLOT_SIZE, PLOT_MARGIN
    xy = " ".join("{:.1f},{:.1f}".format(left + r * (w - left - 10), top + (1 - p) * (h - top - 40))
                  for r, p in points)
    return '<polyline fill="none" stroke="{}" stroke-width="2"{} points="{}"/>'.format(
        colour, ' stroke-dasharray="6,4"' if dashed else "", xy)


def _axes():
    (w, h), (left, top) = PLOT_SIZE, PLOT_MARGIN
    return ('<rect x="{l}" y="{t}" width="{pw}" height="{ph}" fill="#fafafa" stroke="#999"/>'
            '<text x="{l}" y="{yb}" font-size="12">0</text><text x="{xr}" y="{yb}" font-size="12">1</text>'
            '<text x="{xm}" y="{ya}" font-size="12">recall (IoU 0.5)</text>'
            '<text x="4" y="{yt}" font-size="12">1</text><text x="4" y="{yz}" font-size="12">0</text>'
            '<text x="4" y="{ym}" font-size="12">precision</text>'
            .format(l=left, t=top, pw=w - left - 10, ph=h - top - 40, yb=h - 24, xr=w - 16, xm=w / 2 - 40,
                    ya=h - 6, yt=top + 10, yz=h - 40, ym=h / 2))


def pr_plot_svg(models):
    """One SVG: per model its float (dashed) and QAT int8 (solid) class-mean PR curve, and a legend.

    Args:
      models: compare.json rows (those without a QAT fidelity measurement are left out).
    """
    lines, legend = [], []
    for k, m in enumerate(x for x in models if x["qat"].get("pr_curve")):
        colour = COLOURS[k % len(COLOURS)]
        for kind, dashed in (("float", True), ("int8", False)):
            curve = m["qat"]["pr_curve"].get(kind)
            if curve:
                lines.append(_polyline(class_mean_precision(curve), colour, dashed))
        legend.append('<span style="color:{}">&#9632; {}</span>'.format(colour, html.escape(m["name"])))
    svg = '<svg width="{}" height="{}">{}{}</svg>'.format(PLOT_SIZE[0], PLOT_SIZE[1], _axes(), "".join(lines))
    return svg + "<p>{} &nbsp; (solid: QAT int8, dashed: its float twin)</p>".format(" &nbsp; ".join(legend))


def _gate(entry):
    if entry["passed"]:
        return "passed"
    return "REJECTED ({}): {}".format(entry["rejected_by"], "; ".join(entry["reasons"]))


def _metric(entry, kind, key="map"):
    """An export entry's float or int8 figure as table text; "-" when the export measured none."""
    return _fmt((entry.get(kind) or {}).get(key))


def _accuracy_rows(models):
    rows = []
    for m in models:
        q, p = m["qat"], m["ptq"]
        rows.append([m["name"], _metric(q, "float"), _metric(q, "float", "map50"), _metric(q, "int8"),
                     _fmt(q.get("ratio"), 3), _fmt(q.get("agreement"), 3), _metric(p, "float"), _metric(p, "int8"),
                     _fmt(p.get("ratio"), 3), _fmt(p.get("agreement"), 3)])
    return rows


def _size_rows(models):
    rows = []
    for m in models:
        x = m["int8"]
        if x is None:
            rows.append([m["name"]] + ["-"] * 7)
            continue
        s, pre = x["size"], x["preflight"]
        rows.append([m["name"], "{:.2f} M".format(s["parameters"] / 1e6), "{:.1f} M".format(s["multiply_adds"] / 1e6),
                     "{:.0f} KiB".format(x["tflite_bytes"] / 1024.0),
                     "{} / {}".format(pre["ops_on_tpu"], pre["ops_on_cpu"]),
                     "{:.2f} MiB ({:.0%} of 8 MiB)".format(s["parameter_bytes"] / 1048576.0, s["on_chip_fraction"]),
                     _fmt(x["cpu_latency_ms"], 2)])
    return rows


def render_html(compare):
    """The whole page for a compare.json dict."""
    models = compare["models"]
    arch = _table(["model", "feature extractor", "SSDLite (depthwise)", "box predictor kernel", "input", "depth"],
                  [[m["name"], m["architecture"]["feature_extractor"], m["architecture"]["use_depthwise"],
                    m["architecture"]["box_predictor_kernel_size"], "x".join(map(str, m["architecture"]["input"])),
                    m["architecture"]["depth_multiplier"]] for m in models])
    accuracy = _table(["model", "float mAP", "float mAP@0.5", "QAT int8 mAP", "QAT int8/float", "QAT agreement",
                       "PTQ float mAP", "PTQ int8 mAP", "PTQ int8/float", "PTQ agreement"], _accuracy_rows(models))
    size = _table(["model", "parameters", "multiply-adds", "int8 .tflite", "ops TPU / CPU (preflight)",
                   "parameter bytes vs on-chip cache", "CPU int8 ms (1 thread)"], _size_rows(models))
    gates = _table(["model", "QAT export", "PTQ export"], [[m["name"], _gate(m["qat"]), _gate(m["ptq"])]
                                                        for m in models])
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>edgedet compare</title><style>{style}</style>"
            "</head><body><h1>edgedet compare: {n} models</h1><p>{steps} steps each, quantization-aware from step "
            "{delay}; {images} eval images from {data}; CPU figures on {cpu}; created {created}.</p>"
            "<h2>Architectures</h2>{arch}<h2>Accuracy (COCO mAP on the eval split)</h2>{accuracy}"
            "<p>QAT: the quantization-aware model at step {steps} against its float twin. PTQ: post-training int8 "
            "of the float checkpoint at step {delay} (no quantization-aware training), against that float "
            "model. Agreement: detections at the app's live thresholds that match the float model's.</p>"
            "<h2>Export gate</h2>{gates}"
            "<h2>Size and speed (model_int8.tflite: QAT, or PTQ where the QAT export failed)</h2>{size}"
            "<p>Parameters and multiply-adds are counted from the .tflite graph (CONV_2D, DEPTHWISE_CONV_2D, "
            "FULLY_CONNECTED; batch norm folded). Ops on TPU / CPU are the Edge TPU preflight's prediction; no "
            "edgetpu_compiler ran. Latency: median of {invokes} invokes on this host's CPU.</p>"
            "<h2>Precision-recall at IoU 0.5, mean over classes</h2>{plot}</body></html>"
            .format(style=STYLE, n=len(models), steps=compare["steps"], delay=compare["quantization_delay"],
                    images=compare["eval_images"], data=html.escape(compare["data"]),
                    cpu=html.escape(compare["host"]), created=html.escape(compare["created"]),
                    arch=arch, accuracy=accuracy, gates=gates, size=size, invokes=compare["latency_invokes"],
                    plot=pr_plot_svg(models)))
