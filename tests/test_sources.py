"""app.capture.sources: every --source kind opens, reads in order, ends, loops, and fails with a UserError."""

import time

import cv2
import numpy as np
import pytest

from app.errors import UserError
from app.capture.sources import ImageFolderSource, SourceLost, open_source, parse_synthetic


def _write_images(folder, count):
    names = []
    for i in range(count):
        name = "img_{:02d}.png".format(i)
        image = np.full((40, 60, 3), 20 * i, np.uint8)
        cv2.imwrite(str(folder / name), image)
        names.append(name)
    return names


def test_synthetic_spec_parsing():
    assert parse_synthetic("synthetic") == (640, 480, 30.0)
    assert parse_synthetic("synthetic:320x240") == (320, 240, 30.0)
    assert parse_synthetic("synthetic:320x240@0") == (320, 240, 0.0)
    assert parse_synthetic("synthetic@12.5") == (640, 480, 12.5)
    assert parse_synthetic("0") is None
    for bad in ("synthetic:320", "synthetic:10x10", "synthetic:320x240@x"):
        with pytest.raises(UserError):
            parse_synthetic(bad)


def test_synthetic_source_gives_moving_frames_at_its_pace():
    source = open_source("synthetic:96x64@50")
    assert source.live
    start = time.monotonic()
    frames = [source.read()[0] for _ in range(6)]
    elapsed = time.monotonic() - start
    assert frames[0].shape == (64, 96, 3) and frames[0].dtype == np.uint8
    assert elapsed >= 5 * 0.02 * 0.9  # 6 frames at 50 fps span 5 periods
    assert np.abs(frames[0].astype(int) - frames[5].astype(int)).mean() > 0.1  # shapes moved


def test_unpaced_synthetic_is_fast():
    source = open_source("synthetic:64x64@0")
    start = time.monotonic()
    for _ in range(20):
        source.read()
    assert time.monotonic() - start < 2.0


def test_folder_reads_every_image_in_order_and_names_them(tmp_path):
    names = _write_images(tmp_path, 4)
    (tmp_path / "notes.txt").write_text("not an image")
    source = open_source(str(tmp_path))
    assert not source.live
    got = []
    while True:
        frame = source.read()
        if frame is None:
            break
        got.append(frame)
    assert [name for _, name in got] == names
    assert [int(image[0, 0, 0]) for image, _ in got] == [0, 20, 40, 60]


def test_glob_loop_and_realtime(tmp_path):
    _write_images(tmp_path, 3)
    source = open_source(str(tmp_path / "img_0[12].png"), loop=True, realtime=True)
    assert isinstance(source, ImageFolderSource) and source.live
    assert [source.read()[1] for _ in range(5)] == ["img_01.png", "img_02.png"] * 2 + ["img_01.png"]


def test_unreadable_image_is_skipped(tmp_path):
    _write_images(tmp_path, 2)
    (tmp_path / "img_00b.jpg").write_bytes(b"not a jpeg")
    source = open_source(str(tmp_path))
    assert [source.read()[1], source.read()[1], source.read()] == ["img_00.png", "img_01.png", None]


def test_video_file_plays_to_the_end_and_loops(tmp_path):
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert writer.isOpened()
    for i in range(5):
        writer.write(np.full((48, 64, 3), 40 * i, np.uint8))
    writer.release()
    source = open_source(path)
    assert not source.live
    levels = []
    while True:
        frame = source.read()
        if frame is None:
            break
        levels.append(int(frame[0].mean()))
    assert len(levels) == 5
    np.testing.assert_allclose(levels, [0, 40, 80, 120, 160], atol=3)
    looped = open_source(path, loop=True)
    assert len([looped.read() for _ in range(12)]) == 12 and looped.read() is not None


@pytest.mark.parametrize("spec,match", [
    ("/no/such/file.mp4", "no such camera, file or folder"),
    ("/dev/video99", "does not exist"),
    ("7", "camera /dev/video7 does not exist"),
    ("synthetic:8x8", "at least 32x32"),
])
def test_sources_that_never_open_are_user_errors(spec, match):
    with pytest.raises(UserError, match=match):
        open_source(spec)


def test_empty_folder_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no images"):
        open_source(str(tmp_path))


def test_url_credentials_are_masked_in_errors_and_names():
    with pytest.raises(UserError) as info:
        open_source("rtsp://admin:hunter2@127.0.0.1:9/stream")
    assert "hunter2" not in str(info.value) and "admin" not in str(info.value)
    assert "rtsp://***:***@127.0.0.1:9/stream" in str(info.value)


def test_live_capture_raises_source_lost_when_frames_stop(tmp_path):
    # A video file opened as a live stream stands in for a camera that stops.
    from app.capture.sources import CaptureSource
    path = str(tmp_path / "one.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (32, 32))
    writer.write(np.zeros((32, 32, 3), np.uint8))
    writer.release()
    source = CaptureSource(path, "cam", live=True)
    assert source.read() is not None
    with pytest.raises(SourceLost):
        source.read()
    assert source.reopen() and source.read() is not None


def test_unpaced_synthetic_renders_on_demand_and_paced_is_live():
    assert not open_source("synthetic:64x64@0").live
    assert open_source("synthetic:64x64@15").live
