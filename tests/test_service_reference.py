"""The float-reference check in a real `python -m app` process, end to end.

The broken bundle's int8 model was made the way the user made theirs (raw 0..255
calibration of the float network's SavedModel; tests/app_support.py). The app must catch
it in the start-up check on the bundle's samples, emit `fallback`, and every detection it
then reports (from --events) must be the float model's. Nothing is mocked: the int8 model
runs on the CPU as the live model (there is no Edge TPU here).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from app.model import postprocess
from app.check import reference
from app.model.bundle import load_bundle
from app_support import NUM_SAMPLES, read_events, reference_bundles, write_samples  # noqa: F401
from conftest import ROOT
from tiny_bundle import tiny_bundle  # noqa: F401


def _run_app(*args, timeout=120):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    proc = subprocess.run([sys.executable, "-m", "app", "--runtime", "cpu", "--headless", "--threads", "1"]
                          + list(args), cwd=str(ROOT), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=timeout)
    return proc.returncode, proc.stderr


@pytest.fixture(scope="module")
def frames_dir(tmp_path_factory):
    """Six synthetic scenes (different from the bundle's samples) as an image folder source."""
    folder = str(tmp_path_factory.mktemp("frames"))
    write_samples(folder, count=6, seed=23)
    return os.path.join(folder, "samples")


def _float_detections(bundle_dir, path):
    """What the float model reports for one image file: (Detections, pixel boxes x0,y0,x1,y1)."""
    import cv2
    bundle = load_bundle(bundle_dir)
    thresholds = dict(bundle.postprocess, class_score_thresholds=None)
    _, worker = reference.open_float_worker(bundle, thresholds, num_threads=1)
    image = cv2.imread(path)
    det = reference.detect(worker, image)
    return det, postprocess.to_pixel_boxes(det.boxes, *image.shape[:2])


def test_broken_int8_is_caught_at_start_and_the_app_reports_the_float_models_detections(
        reference_bundles, frames_dir, tmp_path):  # noqa: F811
    events_path, stats_path = str(tmp_path / "events.jsonl"), str(tmp_path / "stats.json")
    code, err = _run_app("--model", reference_bundles["broken"], "--source", frames_dir, "--events", events_path,
                         "--stats", stats_path)
    assert code == 0, err[-3000:]
    events = read_events(events_path)
    names = [e.get("event") for e in events if e["type"] == "status"]
    assert names[:3] == ["reference_check", "fallback", "started"] and names[-1] == "stopped", names
    check, fallback, started = [e for e in events if e["type"] == "status"][:3]
    print("start-up agreement of the raw-pixel int8 with the float model:", check["agreement"])
    assert check["source"] == "samples" and check["frames"] == NUM_SAMPLES
    assert check["agreement"] < 0.3 and check["reference_detections"] >= NUM_SAMPLES  # measured 0.13
    assert "calibrated with raw pixels" in check["cause"] and "edgedet-train doctor" in check["cause"]
    assert fallback["to"] == "float" and fallback["model"] == "int8" and started["model"] == "float"
    assert "falling back to the float model" in err and "calibrated with raw pixels" in err

    detections = [e for e in events if e["type"] == "detections"]
    assert sorted(e["source"] for e in detections) == sorted(os.listdir(frames_dir))
    total = 0
    for event in detections:
        assert event["model"] == "float"
        want, pixels = _float_detections(reference_bundles["broken"], os.path.join(frames_dir, event["source"]))
        assert len(event["detections"]) == len(want.scores) > 0
        for got, score, class_id, box in zip(event["detections"], want.scores, want.class_ids, pixels):
            assert got["class_id"] == int(class_id) and got["score"] == pytest.approx(float(score), abs=1e-4)
            np.testing.assert_allclose(got["box"], box, atol=0.06)
            total += 1
    assert total >= len(detections)
    stats = json.load(open(stats_path))
    assert stats["model"] == "float" and stats["runtime"].endswith("(float fallback)")
    assert stats["reference"]["action"] == "fallback" and stats["reference"]["agreement"] < 0.3


def test_good_int8_passes_the_start_up_check_and_stays_live(reference_bundles, frames_dir, tmp_path):  # noqa: F811
    events_path = str(tmp_path / "events.jsonl")
    code, err = _run_app("--model", reference_bundles["good"], "--source", frames_dir, "--events", events_path)
    assert code == 0, err[-3000:]
    events = read_events(events_path)
    status = [e for e in events if e["type"] == "status"]
    assert [e["event"] for e in status][:2] == ["reference_check", "started"]
    assert status[0]["agreement"] >= 0.9 and "fallback" not in [e["event"] for e in status]  # measured 0.95
    assert all(e["model"] == "int8" for e in events if e["type"] == "detections")


def test_on_mismatch_exit_ends_with_code_3_before_any_frame(reference_bundles, frames_dir, tmp_path):  # noqa: F811
    events_path = str(tmp_path / "events.jsonl")
    code, err = _run_app("--model", reference_bundles["broken"], "--source", frames_dir, "--events", events_path,
                         "--on-mismatch", "exit")
    assert code == 3, err[-3000:]
    events = read_events(events_path)
    assert [e.get("event") for e in events] == ["reference_check", "reference_mismatch", "stopped"]
    assert "exiting: the int8 model disagrees with the float model" in err


def test_no_reference_flag_runs_the_broken_model_unchecked(reference_bundles, frames_dir, tmp_path):  # noqa: F811
    events_path = str(tmp_path / "events.jsonl")
    code, err = _run_app("--model", reference_bundles["broken"], "--source", frames_dir, "--events", events_path,
                         "--no-reference", "--max-frames", "2")
    assert code == 0, err[-3000:]
    events = read_events(events_path)
    assert events[0]["event"] == "started" and events[0]["model"] == "int8"
    assert "reference_check" not in [e.get("event") for e in events]
