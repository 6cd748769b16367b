"""`edgedet` / `python -m app` end to end in real processes: exit codes, one-line errors, events.

Only the TFLite runtime's own native "INFO: ..." line (printed by C++ when an interpreter
is created) is ignored when counting stderr lines.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import CORAL, ROOT
from tiny_bundle import tiny_bundle  # noqa: F401


def _run(*args, timeout=60):
    env = dict(os.environ)
    env.pop("DISPLAY", None)
    proc = subprocess.run([sys.executable, "-m", "app"] + list(args), cwd=str(ROOT), env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True,
                          timeout=timeout)
    lines = [line for line in proc.stderr.splitlines() if line.strip() and not line.startswith("INFO: ")]
    return proc.returncode, proc.stdout, lines


def _assert_user_error(args, *fragments):
    code, _, lines = _run(*args)
    assert code == 2, lines
    assert len(lines) == 1 and lines[0].startswith("edgedet: error: "), lines
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_model():
    _assert_user_error(["--model", "/no/such/bundle", "--headless"],
                       "--model", "/no/such/bundle", "no such file or folder")


def test_corrupt_model_in_a_bundle(tiny_bundle, tmp_path):  # noqa: F811
    bundle = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, bundle)
    path = os.path.join(bundle, "model_int8.tflite")
    data = open(path, "rb").read()
    open(path, "wb").write(data[: len(data) // 2])
    _assert_user_error(["--model", bundle, "--runtime", "cpu", "--headless"], "model_int8.tflite",
                       "cannot load this model")


def test_model_with_an_unknown_op():
    model = str(CORAL / "model_invoking_error.tflite")
    _assert_user_error(["--model", model, "--labels", str(CORAL / "coco_labels.txt"), "--runtime", "cpu",
                        "--headless"], "model_invoking_error.tflite", "fake-op-double")


def test_labels_that_do_not_match_the_model(tiny_bundle, tmp_path):  # noqa: F811
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    _assert_user_error(["--model", tiny_bundle, "--labels", str(labels), "--headless"],
                       "2 labels", "do not match the bundle's 3")


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("app:\n  max_frame: 3\n")
    _assert_user_error(["--config", str(cfg), "--headless"], "app.max_frame: unknown key")


def test_source_that_never_opens(tiny_bundle):  # noqa: F811
    _assert_user_error(["--model", tiny_bundle, "--source", "/dev/video97", "--headless"],
                       "--source /dev/video97: camera /dev/video97 does not exist")


def test_runtime_edgetpu_without_a_tpu(tiny_bundle, tmp_path):  # noqa: F811
    bundle = str(tmp_path / "b")
    shutil.copytree(tiny_bundle, bundle)
    meta = json.load(open(os.path.join(bundle, "model.json")))
    shutil.copy(os.path.join(bundle, "model_int8.tflite"), os.path.join(bundle, "model_int8_edgetpu.tflite"))
    meta["models"]["edgetpu"] = dict(meta["models"]["int8"], file="model_int8_edgetpu.tflite")
    json.dump(meta, open(os.path.join(bundle, "model.json"), "w"))
    _assert_user_error(["--model", bundle, "--runtime", "edgetpu", "--headless"],
                       "--runtime edgetpu", "did not load")


def test_bad_device_string(tiny_bundle):  # noqa: F811
    _assert_user_error(["--model", tiny_bundle, "--device", "usb0", "--headless"], "usb0")


def test_run_writes_events_to_stdout_and_stats(tiny_bundle, tmp_path):  # noqa: F811
    stats = tmp_path / "stats.json"
    code, out, lines = _run("run", "--model", tiny_bundle, "--source", "synthetic:320x240@0", "--max-frames", "5",
                            "--events", "-", "--stats", str(stats), "--score-threshold", "0.5",
                            "--max-detections", "2", "--threads", "1")
    assert code == 0, lines
    events = [json.loads(line) for line in out.splitlines()]
    frames = [e for e in events if e["type"] == "detections"]
    # The tiny bundle has no sample images: the start-up reference check says so, then "started".
    assert events[0]["event"] == "reference_check" and events[0]["skipped"] == "no sample images"
    assert events[1]["event"] == "started" and events[-1] == dict(events[-1], event="stopped", frames=5)
    assert len(frames) == 5 and all(e["model"] == "int8" and e["source"] == "synthetic:320x240@0" for e in frames)
    for e in frames:
        assert len(e["detections"]) <= 2
        for d in e["detections"]:
            x0, y0, x1, y1 = d["box"]
            assert d["score"] >= 0.5 and 0 <= x0 <= x1 <= 320 and 0 <= y0 <= y1 <= 240
            assert d["label"] == ["circle", "square", "triangle"][d["class_id"]]
    assert sum(len(e["detections"]) for e in frames) > 0
    saved = json.loads(stats.read_text())
    assert saved["num_threads"] == 1 and saved["sources"]["synthetic:320x240@0"]["processed"] == 5
    assert saved["runtime"].startswith("ai_edge_litert") and saved["model"] == "int8"
    assert saved["reference"]["live_model"] == "int8" and saved["reference"]["agreement"] is None
    log = "\n".join(lines)
    assert "runtime ai_edge_litert" in log and "input uint8 scale 0.00784314 zero point 127" in log
    assert "Edge TPUs found: none" in log and "model_int8.tflite" in log


def test_config_sections_and_cli_overrides(tiny_bundle, tmp_path):  # noqa: F811
    events = tmp_path / "events.jsonl"
    cfg = tmp_path / "config.yaml"
    cfg.write_text("app:\n  model: {}\n  sources: ['synthetic:160x120@0']\n  max_frames: 9\n  headless: true\n"
                   "  precision: float\n  events: {}\npostprocess:\n  max_detections: 1\n"
                   "  class_score_thresholds: {{square: 0.999}}\n".format(tiny_bundle, events))
    code, _, lines = _run("--config", str(cfg), "--max-frames", "3")
    assert code == 0, lines
    frames = [json.loads(line) for line in open(str(events)) if '"detections"' in line]
    assert len(frames) == 3 and all(e["model"] == "float" for e in frames)
    assert all(len(e["detections"]) <= 1 for e in frames)
    assert all(d["score"] >= 0.999 for e in frames for d in e["detections"] if d["label"] == "square")


def test_devices_command():
    code, out, lines = _run("devices")
    assert code == 0 and "TFLite runtimes (first is used): ai_edge_litert" in out
    assert "Edge TPUs: none found" in out


def _cross_class_overlaps(frames, iou_threshold):
    """Pairs of detections of different classes in one frame overlapping above the threshold."""
    from app.model.nms import iou_one_to_many
    import numpy as np
    count = 0
    for e in frames:
        dets = e["detections"]
        for i, a in enumerate(dets):
            for b in dets[i + 1:]:
                iou = iou_one_to_many(np.array(a["box"], np.float32), np.array([b["box"]], np.float32))[0]
                count += a["class_id"] != b["class_id"] and iou > iou_threshold
    return count


def test_class_agnostic_nms_flag_keeps_one_label_per_object():
    # On the demo model a low threshold makes some objects score under two classes.
    common = ("--model", "models/demo", "--source", "synthetic:320x240@0", "--max-frames", "40",
              "--events", "-", "--score-threshold", "0.15", "--threads", "1", "--no-reference", "--headless")
    found = {}
    for flag in ("--per-class-nms", "--class-agnostic-nms"):
        code, out, lines = _run(*(common + (flag,)))
        assert code == 0, lines
        frames = [e for e in map(json.loads, out.splitlines()) if e["type"] == "detections"]
        assert len(frames) == 40 and sum(len(e["detections"]) for e in frames) > 40
        found[flag] = _cross_class_overlaps(frames, 0.6)
    assert found["--per-class-nms"] > 0  # the case exists, so the next line tests something
    assert found["--class-agnostic-nms"] == 0


def test_bad_zone_is_one_line_naming_the_key(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("objects:\n  sources:\n    synthetic:320x240@0:\n      zones:\n        door:\n"
                   "          points: [[0, 0], [400, 0], [0, 100]]\n")
    _assert_user_error(["--config", str(cfg), "--source", "synthetic:320x240@0", "--headless", "--no-reference"],
                       "objects.sources.synthetic:320x240@0.zones.door.points[1]: [400, 0] lies outside the 320x240 frame")


def test_objects_for_a_source_that_is_not_there(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("objects:\n  sources:\n    cam2:\n      labels: [circle]\n")
    _assert_user_error(["--config", str(cfg), "--headless", "--no-reference"],
                       "objects.sources.cam2: no --source has this value or name")


def test_run_writes_object_events_beside_frame_lines(tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_text("objects:\n  sources:\n    synthetic:320x240@0:\n      zones:\n        lower:\n"
                   "          points: [[0, 0.5], [1, 0.5], [1, 1], [0, 1]]\n          coordinates: normalized\n")
    stats = tmp_path / "stats.json"
    code, out, lines = _run("--config", str(cfg), "--source", "synthetic:320x240@0", "--max-frames", "60",
                            "--events", "-", "--no-reference", "--threads", "1", "--stats", str(stats))
    assert code == 0, lines
    events = [json.loads(line) for line in out.splitlines()]
    objects = [e for e in events if e["type"] == "object"]
    assert len([e for e in events if e["type"] == "detections"]) == 60
    new = [e for e in objects if e["event"] == "new"]
    ended = [e for e in objects if e["event"] == "end"]
    # Every object that was new has ended by the stop, and the demo scene has 2-4 shapes.
    assert 2 <= len(new) <= 6 and sorted(e["id"] for e in ended) == sorted(e["id"] for e in new)
    for e in objects:
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240 and e["source"] == "synthetic:320x240@0"
        assert abs(e["area"] - (x1 - x0) * (y1 - y0)) <= 0.005 * e["area"] and e["snapshot"] is None  # box rounded
        assert e["top_score"] >= e["score"] >= 0.4 and e["label"] in ("circle", "square", "triangle")
        assert set(e["current_zones"]) <= set(e["entered_zones"]) <= {"lower"}
    assert all(e["end_time"] >= e["start_time"] for e in ended)
    assert events[-1]["event"] == "stopped"
    # The stats file counts the objects in view on the last frame, by label and zone.
    in_view = json.loads(stats.read_text())["objects"]["synthetic:320x240@0"]
    assert 1 <= in_view["total"] <= 6 and sum(in_view["labels"].values()) == in_view["total"]
    assert set(in_view["zones"]) <= {"lower"}
