"""A finding: one diagnosed problem with its evidence and its fix; ranking and printing.

A finding is a plain dict, JSON-ready: {"id", "severity", "title", "detail", "fix"}
plus optional measured numbers under "evidence". Causes rank before the symptoms
they produce, so the first line printed is the thing to fix first.
"""

SEVERITIES = ("error", "warning", "info")

# Causes first, then what they do to the outputs, then deployment concerns.
ID_ORDER = (
    "calibration_input_range",
    "input_quantization_mismatch",
    "float_ops_remaining",
    "dynamic_shape",
    "batch_not_one",
    "layer_error_blowup",
    "output_saturation",
    "score_collapse",
    "box_drift",
    "detection_disagreement",
    "class_index_quantized",
    "edgetpu_partition",
)


def finding(finding_id, severity, title, detail, fix, evidence=None):
    """Builds one finding dict.

    Args:
      finding_id: one of ID_ORDER.
      severity: "error" | "warning" | "info".
      title: short statement of the cause, one line.
      detail: what was measured, with numbers.
      fix: what to change, in code terms where possible.
      evidence: optional JSON-ready dict of the measured values.

    Returns:
      dict with keys id, severity, title, detail, fix (and evidence if given).
    """
    if finding_id not in ID_ORDER:
        raise ValueError("finding id must be one of {}, got {!r}".format(ID_ORDER, finding_id))
    if severity not in SEVERITIES:
        raise ValueError("severity must be one of {}, got {!r}".format(SEVERITIES, severity))
    result = {"id": finding_id, "severity": severity, "title": title, "detail": detail, "fix": fix}
    if evidence is not None:
        result["evidence"] = evidence
    return result


def rank(findings):
    """Sorts findings: errors, then warnings, then info; within a severity, causes first."""
    return sorted(findings, key=lambda f: (SEVERITIES.index(f["severity"]), ID_ORDER.index(f["id"])))


def has_error(findings):
    """True if any finding is an error (the doctor then exits 1)."""
    return any(f["severity"] == "error" for f in findings)


def headline(findings):
    """The first line printed: the top cause and its fix, or that nothing is wrong.

    Args:
      findings: ranked findings.
    """
    if not findings or findings[0]["severity"] == "info":
        return "doctor: no problem found: the quantized model matches its float twin on these images."
    top = findings[0]
    return "doctor: {}: {} -- fix: {}".format(top["severity"].upper(), top["title"], top["fix"])


def format_text(findings, context_lines=()):
    """Findings as readable text: the headline, context, then each finding in full.

    Args:
      findings: ranked findings.
      context_lines: lines describing what was compared (models, images, float range).

    Returns:
      str, lines joined by newlines; the first line is `headline(findings)`.
    """
    lines = [headline(findings)]
    lines += ["  " + line for line in context_lines]
    for number, f in enumerate(findings, 1):
        lines += ["", "{}. [{}] {} ({})".format(number, f["severity"], f["title"], f["id"]),
                  "   " + f["detail"], "   fix: " + f["fix"]]
    return "\n".join(lines)
