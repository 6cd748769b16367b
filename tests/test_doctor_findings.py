"""Finding records, ranking and the printed headline (no models needed)."""

import pytest

from training.diagnose import findings
from training.diagnose.inputs import normalization_name, representative_code


def _f(finding_id, severity):
    return findings.finding(finding_id, severity, "t " + finding_id, "d", "x")


def test_rank_puts_errors_first_and_causes_before_symptoms():
    found = [_f("edgetpu_partition", "warning"), _f("detection_disagreement", "error"),
             _f("calibration_input_range", "error"), _f("detection_disagreement", "info")]
    ranked = findings.rank(found)
    assert [(f["id"], f["severity"]) for f in ranked] == [
        ("calibration_input_range", "error"), ("detection_disagreement", "error"),
        ("edgetpu_partition", "warning"), ("detection_disagreement", "info")]
    assert findings.has_error(ranked)
    assert not findings.has_error(ranked[2:])


def test_headline_names_title_and_fix_of_the_top_finding():
    top = findings.finding("calibration_input_range", "error", "the cause", "d", "the fix")
    line = findings.headline([top])
    assert line == "doctor: ERROR: the cause -- fix: the fix"
    assert findings.format_text([top]).splitlines()[0] == line
    assert findings.headline([]).startswith("doctor: no problem found")


def test_finding_rejects_unknown_id_and_severity():
    with pytest.raises(ValueError, match="finding id"):
        findings.finding("made_up", "error", "t", "d", "f")
    with pytest.raises(ValueError, match="severity"):
        findings.finding("box_drift", "fatal", "t", "d", "f")


def test_normalization_names_and_code():
    assert normalization_name((0.0, 255.0)).startswith("raw 0..255")
    assert normalization_name((0.0, 1.0 + 0.01)) == "pixels / 255"
    assert normalization_name((-1.0078, 0.9922)) == "pixels / 127.5 - 1"  # zero point 128
    assert "[0.1, 0.5]" in normalization_name((0.1, 0.5))
    assert representative_code((-1.0, 1.0)) == "yield [(img.astype(np.float32) / 127.5 - 1.0)[None]]"
    assert representative_code((0.0, 2.0)) == "yield [(img.astype(np.float32) * 0.00784314 + 0)[None]]"
