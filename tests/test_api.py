"""The Python API (`import edgedet`): the README example runs, stream() yields tracked frames of
the real pipeline, Detector.detect() finds the shapes of a synthetic image, bad input raises."""

import re
import subprocess
import sys

import numpy as np
import pytest

from app.errors import UserError
from conftest import ROOT


def _readme_example():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Python API", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_example_runs():
    proc = subprocess.run([sys.executable, "-c", _readme_example()], cwd=str(ROOT), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.splitlines()
    news = [line for line in lines if line.startswith("new ")]
    assert 2 <= len(news) <= 6, lines  # the demo scene's 2-4 shapes, maybe a short-lived extra
    assert any(re.match(r"(circle|square|triangle) 0\.\d+ \(", line) for line in lines), lines


def test_stream_yields_tracked_frames_of_the_live_pipeline():
    import edgedet
    frames = list(edgedet.stream(source="synthetic:320x240@0", max_frames=40, reference=False, threads=1))
    assert len(frames) == 40 and [f.index for f in frames] == list(range(1, 41))  # on demand: every frame
    assert all(f.image.shape == (240, 320, 3) and f.source == "synthetic:320x240@0" for f in frames)
    last = frames[-1]
    tracked = {d.track_id for d in last.detections if d.track_id > 0}
    assert tracked and tracked <= {o["id"] for o in last.objects}
    for d in last.detections:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240 and d.score >= 0.4
    assert [e["event"] for f in frames for e in f.events].count("new") >= 2


def test_detector_finds_the_shapes_of_a_synthetic_image():
    import edgedet
    from app.model.nms import iou_matrix
    from app.model.postprocess import to_pixel_boxes
    from app.capture.synthetic import MovingScene
    image, truth, class_ids = MovingScene(320, 240, seed=3, num_shapes=3).next_frame()
    found = edgedet.Detector(runtime="cpu", threads=1).detect(image)
    boxes = np.array([d.box for d in found], np.float32).reshape(-1, 4)
    iou = iou_matrix(to_pixel_boxes(truth, 240, 320), boxes)
    assert len(found) >= 2 and (iou.max(axis=1) >= 0.5).sum() >= 2  # most of the 3 shapes, in pixels
    with pytest.raises(ValueError, match="BGR uint8"):
        edgedet.Detector(runtime="cpu").detect(np.zeros((10, 10), np.uint8))


def test_bad_input_raises_the_cli_message():
    import edgedet
    with pytest.raises(UserError, match="no such file or folder"):
        edgedet.Detector("/no/such/bundle")
    with pytest.raises(TypeError, match="edgedet run's flags"):
        next(edgedet.stream(no_such_flag=1))
