"""A bundle the fidelity gate rejects carries the doctor's diagnosis beside report.html.

Real export (training.export.export_bundle, real converter and interpreter) of a tiny
untrained SSD whose conv kernels are re-drawn He-normal (so its outputs depend on the
image and it proposes boxes): its float mAP is ~0 and its int8 twin disagrees with it,
so the gate rejects it for real. The rejected folder must hold doctor.json/doctor.txt
and report.html must show the doctor's headline and link to doctor.json.
"""

import dataclasses
import json
import os

import pytest

from export_support import synthetic_examples, tiny_config


@pytest.fixture(scope="module")
def rejected(tmp_path_factory):
    from training import export
    from training.config import load_config
    from training.model import build_ssd
    from test_user_failure import _he_init
    cfg = tiny_config(load_config())
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, class_prediction_bias_init=-1.0))
    model = build_ssd(cfg.model)
    _he_init(model)
    out = str(tmp_path_factory.mktemp("export") / "tiny")
    lines = []
    code, where = export.export_bundle(model, cfg, {"step": 0, "phase": "float"}, synthetic_examples(100),
                                       out, log=lines.append)
    return code, where, lines, out


def test_rejected_bundle_links_the_doctor(rejected):
    from training import doctor
    from training.diagnose import findings
    code, where, lines, out = rejected
    assert code == 1 and not os.path.exists(out)
    assert os.path.basename(os.path.dirname(where)) == "rejected"
    with open(os.path.join(where, "doctor.json")) as f:
        diagnosis = json.load(f)
    with open(os.path.join(where, "report.json")) as f:
        report = json.load(f)
    assert not report["fidelity"]["passed"]
    # The doctor ran on the bundle's own pair, fed the range model.json states.
    assert diagnosis["kind"] == "raw_ssd" and diagnosis["float_range"] == [-1.0, 1.0]
    assert diagnosis["float_range_source"] == "model.json"
    assert diagnosis["images"] == doctor.REJECTED_IMAGES
    assert diagnosis["headline"] == findings.headline(diagnosis["findings"])
    # The gate rejected on agreement; the doctor measures the same pair's agreement itself.
    agreement = {f["id"]: f for f in diagnosis["findings"]}["detection_disagreement"]["evidence"]["agreement"]
    assert 0.0 <= agreement < 0.9
    assert report["doctor"] == {"headline": diagnosis["headline"], "json": "doctor.json",
                                "text": "doctor.txt", "has_error": findings.has_error(diagnosis["findings"])}
    with open(os.path.join(where, "report.html")) as f:
        page = f.read()
    assert "<a href='doctor.json'>doctor.json</a>" in page
    import html
    assert html.escape(diagnosis["headline"]) in page
    with open(os.path.join(where, "doctor.txt")) as f:
        assert f.readline().rstrip("\n") == diagnosis["headline"]
    assert diagnosis["headline"] in lines  # the export log says it too
