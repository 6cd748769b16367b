"""app.pipeline.slots, app.inference.live_model and app.pipeline.threads on the real tiny bundle and the real interpreter.

(Named test_app_pipeline.py because tests/test_pipeline.py tests training.data.pipeline.)
"""

import json
import threading
import time

import cv2
import numpy as np
import pytest

from app.inference import live_model, runtime
from app.model import postprocess, preprocess
from app.model.bundle import load_bundle
from app.pipeline.threads import Pipeline
from app.outputs.sinks import EventWriter, StatsWriter
from app.pipeline.slots import Closed, FrameSlots, ResultQueue
from app.capture.sources import CaptureSource, open_source
from app.pipeline.stats import Stats
from app_support import THRESHOLDS, cpu_worker
from tiny_bundle import build_int8_io_model, tiny_bundle  # noqa: F401



# ----------------------------------------------------------------------------- slots


def test_slot_overwrites_and_counts_drops():
    slots = FrameSlots()
    for i in range(5):
        slots.put("a", i)
    assert slots.drops("a") == 4 and slots.pending() == 1
    assert slots.get(timeout=0.1) == ("a", 4)
    assert slots.get(timeout=0.05) is None


def test_slots_serve_the_longest_waiting_source_first():
    slots = FrameSlots()
    slots.put("a", 1)
    slots.put("b", 1)
    slots.put("a", 2)  # overwriting moves "a" behind "b"
    assert [slots.get(0.1)[0] for _ in range(2)] == ["b", "a"]


def test_slots_take_turns_when_every_slot_is_always_full():
    # Camera "a" always delivers just after "b": ordered by put time alone, "b" would be
    # served every time and "a" never. The key served longest ago goes first instead.
    slots = FrameSlots()
    got = []
    for i in range(6):
        slots.put("b", i)
        slots.put("a", i)
        got.append(slots.get(timeout=0.1)[0])
    assert got == ["b", "a"] * 3


def test_blocking_put_waits_for_the_consumer_and_drops_nothing():
    slots = FrameSlots()
    got = []

    def consume():
        for _ in range(20):
            got.append(slots.get(timeout=2.0)[1])
            time.sleep(0.001)
    thread = threading.Thread(target=consume)
    thread.start()
    for i in range(20):
        assert slots.put("f", i, block=True, timeout=2.0)
    thread.join(3.0)
    assert got == list(range(20)) and slots.drops("f") == 0
    slots.put("f", 99)
    assert not slots.put("f", 100, block=True, timeout=0.05)  # full slot, times out


def test_close_wakes_waiters():
    slots, full, results = FrameSlots(), FrameSlots(), ResultQueue(2)
    full.put("x", 1)
    errors = []

    def wait(fn):
        try:
            fn()
        except Closed:
            errors.append(fn)
    threads = [threading.Thread(target=wait, args=(lambda: slots.get(timeout=5.0),)),
               threading.Thread(target=wait, args=(lambda: full.put("x", 2, block=True, timeout=5.0),)),
               threading.Thread(target=wait, args=(lambda: [results.put(i) for i in range(5)],))]
    for t in threads:
        t.start()
    time.sleep(0.2)
    start = time.monotonic()
    slots.close()
    full.close()
    results.close()
    for t in threads:
        t.join(2.0)
    assert time.monotonic() - start < 1.0 and len(errors) == 3
    with pytest.raises(ValueError):
        ResultQueue(0)


# ----------------------------------------------------------------------------- input and outputs


def _frame(seed=0, height=240, width=320):
    from app.capture.synthetic import render_scene
    return render_scene(np.random.RandomState(seed), height, width)[0]


def _input_tensor(interpreter):
    return interpreter.get_tensor(interpreter.get_input_details()[0]["index"])


def test_uint8_input_is_copied_straight(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    engine, _ = runtime.open_bundle_engine(bundle, "cpu", "int8", num_threads=1)
    writer = live_model.InputWriter(engine.interpreter, bundle.float_range)
    assert writer.mode == "copy" and (writer.height, writer.width) == (96, 112)
    image = _frame()
    writer.write(image)
    expected = preprocess.bgr_to_rgb(preprocess.resize_to_input(image, 96, 112))
    np.testing.assert_array_equal(_input_tensor(engine.interpreter)[0], expected)


def test_float_input_is_normalized(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    engine, _ = runtime.open_bundle_engine(bundle, "cpu", "float", num_threads=1)
    writer = live_model.InputWriter(engine.interpreter, bundle.float_range)
    assert writer.mode == "float"
    image = _frame(1)
    writer.write(image)
    expected = preprocess.image_to_float_input(preprocess.bgr_to_rgb(image), 96, 112)
    np.testing.assert_allclose(_input_tensor(engine.interpreter), expected, atol=1e-6)


def test_inputs_follow_the_bundles_resize_method(tiny_bundle):  # noqa: F811
    # An OD API import (bilinear_tf1): the float input keeps TF1's unrounded values, uint8 rounds them.
    bundle = load_bundle(tiny_bundle)
    rgb = preprocess.bgr_to_rgb(_frame(4))
    for key, expected in (("float", preprocess.image_to_float_input(rgb, 96, 112, method="bilinear_tf1")),
                          ("int8", preprocess.resize_to_input(rgb, 96, 112, "bilinear_tf1")[None])):
        engine, _ = runtime.open_bundle_engine(bundle, "cpu", key, num_threads=1)
        writer = live_model.InputWriter(engine.interpreter, bundle.float_range, "bilinear_tf1")
        writer.write(_frame(4))
        np.testing.assert_allclose(_input_tensor(engine.interpreter), expected, atol=1e-5)
    bilinear = preprocess.image_to_float_input(rgb, 96, 112)
    assert np.abs(bilinear - preprocess.image_to_float_input(rgb, 96, 112, method="bilinear_tf1")).max() > 0.05


def test_int8_input_is_xor_128(tmp_path):
    path = build_int8_io_model(str(tmp_path / "int8io.tflite"))
    engine = runtime.make_cpu_engine(path, 1)
    writer = live_model.InputWriter(engine.interpreter)
    assert writer.mode == "xor"
    image = _frame(2)
    writer.write(image)
    rgb = preprocess.bgr_to_rgb(preprocess.resize_to_input(image, 96, 112)).astype(np.int16)
    np.testing.assert_array_equal(_input_tensor(engine.interpreter)[0], (rgb - 128).astype(np.int8))


def test_mismatched_input_quantization_takes_the_exact_path(tiny_bundle, caplog):  # noqa: F811
    # The int8 model read as if it had been trained on [0, 1]: its quantization no longer matches.
    bundle = load_bundle(tiny_bundle)
    engine, _ = runtime.open_bundle_engine(bundle, "cpu", "int8", num_threads=1)
    writer = live_model.InputWriter(engine.interpreter, (0.0, 1.0))
    assert writer.mode == "requantize" and "calibrated on another input range" in caplog.text
    image = _frame(3)
    writer.write(image)
    scale, zero = writer.quantization
    pixels = preprocess.bgr_to_rgb(preprocess.resize_to_input(image, 96, 112)) / 255.0
    exact = pixels / scale + zero
    expected = np.clip(np.round(exact), 0, 255)
    got = _input_tensor(engine.interpreter)[0]
    # float32 vs float64 may round differently at .5 ties (here x/2 + 127), by one step; elsewhere equal.
    np.testing.assert_allclose(got, expected, atol=1)
    clear = np.abs(exact - np.floor(exact) - 0.5) > 0.01
    assert clear.mean() > 0.3
    np.testing.assert_array_equal(got[clear], expected[clear])


def test_a_prepared_frame_loads_into_any_interpreter_of_its_layout_only(tiny_bundle):  # noqa: F811
    # The capture thread prepares frames for the live model; a worker of another layout (the
    # float fallback taking a frame prepared just before the switch) must prepare it itself.
    bundle = load_bundle(tiny_bundle)
    engines = [runtime.open_bundle_engine(bundle, "cpu", p, num_threads=1)[0] for p in ("int8", "int8", "float")]
    writers = [live_model.InputWriter(e.interpreter, bundle.float_range) for e in engines]
    assert writers[0].layout == writers[1].layout != writers[2].layout
    image = _frame(4)
    prepared = (writers[0].layout, writers[0].prepare(image))
    writers[0].write(image)
    assert writers[1].write_prepared(prepared, image)
    np.testing.assert_array_equal(_input_tensor(engines[1].interpreter), _input_tensor(engines[0].interpreter))
    assert not writers[2].write_prepared(prepared, image)
    expected = preprocess.image_to_float_input(preprocess.bgr_to_rgb(image), 96, 112)
    np.testing.assert_allclose(_input_tensor(engines[2].interpreter), expected, atol=1e-6)
    assert not writers[1].write_prepared(None, _frame(5))  # nothing prepared: the frame is written
    np.testing.assert_array_equal(_input_tensor(engines[1].interpreter)[0],
                                  preprocess.bgr_to_rgb(preprocess.resize_to_input(_frame(5), 96, 112)))


def test_outputs_are_found_by_name_and_labels_checked(tiny_bundle):  # noqa: F811
    bundle = load_bundle(tiny_bundle)
    engine, key = runtime.open_bundle_engine(bundle, "cpu", "int8", num_threads=1)
    reader = live_model.OutputReader(engine.interpreter, bundle.models[key].outputs, engine.model_path)
    assert reader.shape("box_encodings") == (1, len(bundle.anchors), 4)
    assert reader.shape("class_logits") == (1, len(bundle.anchors), 3)
    assert reader.quantization("class_logits")[0] > 0
    live_model.check_labels(reader, bundle.labels, "m")
    with pytest.raises(Exception, match="predicts 3 classes but there are 2 labels"):
        live_model.check_labels(reader, ["a", "b"], "m")
    swapped = {"box_encodings": "nope", "class_logits": "x"}
    with pytest.raises(Exception, match="model.json names output box_encodings"):
        live_model.OutputReader(engine.interpreter, swapped, "m")


# ----------------------------------------------------------------------------- the pipeline


def _reference(bundle_dir, image):
    """What the app must report for one frame, computed without any app/ pipeline code."""
    from ai_edge_litert.interpreter import Interpreter
    bundle = load_bundle(bundle_dir)
    entry = bundle.models["int8"]
    interp = Interpreter(model_path=entry.file)
    interp.allocate_tensors()
    rgb = cv2.cvtColor(cv2.resize(image, (112, 96), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
    interp.set_tensor(interp.get_input_details()[0]["index"], rgb[None])
    interp.invoke()
    out = {d["name"]: d for d in interp.get_output_details()}
    box_d, logit_d = out[entry.outputs["box_encodings"]], out[entry.outputs["class_logits"]]
    det = postprocess.decode_ssd(interp.get_tensor(box_d["index"]), interp.get_tensor(logit_d["index"]),
                                 bundle.anchors, bundle.box_coder_scales, box_quantization=box_d["quantization"],
                                 logit_quantization=logit_d["quantization"], **THRESHOLDS)
    return det, postprocess.to_pixel_boxes(det.boxes, *image.shape[:2])


def test_folder_run_reports_every_frame_like_the_reference(tiny_bundle, tmp_path):  # noqa: F811
    folder = tmp_path / "frames"
    folder.mkdir()
    images = {}
    for i in range(4):
        name = "f{}.jpg".format(i)
        images[name] = _frame(10 + i, 180 + 20 * i, 260)
        cv2.imwrite(str(folder / name), images[name], [cv2.IMWRITE_JPEG_QUALITY, 100])
        images[name] = cv2.imread(str(folder / name))  # what the source will decode
    events_path = str(tmp_path / "events.jsonl")
    stats = Stats("test", "int8", 1)
    pipeline = Pipeline([open_source(str(folder))], [cpu_worker(tiny_bundle)], {0: "circle", 1: "square", 2: "triangle"},
                        [EventWriter(events_path), StatsWriter(str(tmp_path / "stats.json"), stats)], stats)
    assert pipeline.run() == 4
    lines = [json.loads(line) for line in open(events_path)]
    assert [e["event"] for e in lines if e["type"] == "status"] == ["started", "stopped"]
    frames = [e for e in lines if e["type"] == "detections"]
    assert [e["source"] for e in frames] == sorted(images) and [e["frame"] for e in frames] == [1, 2, 3, 4]
    total = 0
    for event in frames:
        det, pixels = _reference(tiny_bundle, images[event["source"]])
        assert event["model"] == "int8" and len(event["detections"]) == len(det.scores)
        for got, score, class_id, box in zip(event["detections"], det.scores, det.class_ids, pixels):
            assert got["class_id"] == class_id and got["label"] == ["circle", "square", "triangle"][class_id]
            assert got["score"] == pytest.approx(float(score), abs=1e-4)
            np.testing.assert_allclose(got["box"], box, atol=0.06)
            total += 1
    assert total > 0
    saved = json.load(open(str(tmp_path / "stats.json")))
    source = saved["sources"][str(folder)]
    assert source["processed"] == 4 and source["capture"] == 4 and source["dropped"] == 0
    assert saved["inference_ms"] > 0 and set(saved["stages_ms"]) >= {"preprocess", "invoke", "decode", "sinks"}


class _Collect(object):
    def __init__(self):
        self.results, self.statuses = [], []

    def write(self, result):
        self.results.append(result)

    def status(self, message):
        self.statuses.append(message)


def test_live_source_max_frames_drops_and_joins_quickly(tiny_bundle):  # noqa: F811
    sink, stats = _Collect(), Stats("test", "int8", 1)

    class SlowDecoder(object):  # a slow output stage makes the live source outrun it
        def __init__(self, inner):
            self.inner = inner

        def decode(self, raw):
            time.sleep(0.02)
            return self.inner.decode(raw)
    worker = cpu_worker(tiny_bundle)
    worker = worker._replace(decoder=SlowDecoder(worker.decoder))
    pipeline = Pipeline([open_source("synthetic:160x120@200")], [worker], {0: "c", 1: "s", 2: "t"}, [sink], stats,
                        max_frames=15)
    pipeline.start()
    pipeline.wait()
    start = time.monotonic()
    assert pipeline.join() == []
    assert time.monotonic() - start < 2.0
    snap = stats.snapshot()["sources"]["synthetic:160x120@200"]
    assert pipeline.processed == 15 == len(sink.results) == snap["processed"]
    assert snap["dropped"] > 0 and snap["capture"] >= 15 + snap["dropped"]
    indices = [r.frame for r in sink.results]
    assert indices == sorted(indices) and indices[-1] > 15  # newest frames, stale ones skipped
    assert stats.last_frame_time() is not None


def test_stop_from_another_thread_joins_within_two_seconds(tiny_bundle):  # noqa: F811
    sink = _Collect()
    pipeline = Pipeline([open_source("synthetic:160x120@0"), open_source("synthetic:64x64@30")],
                        [cpu_worker(tiny_bundle)], {0: "c", 1: "s", 2: "t"}, [sink], Stats())
    pipeline.start()
    time.sleep(0.5)
    start = time.monotonic()
    pipeline.stop()
    alive = pipeline.join()
    assert alive == [] and time.monotonic() - start < 2.0
    assert not any(t.is_alive() for t in pipeline._threads)
    # Both sources were served although the first one delivers as fast as it can.
    assert {r.source for r in sink.results} == {"synthetic:160x120@0", "synthetic:64x64@30"}
    assert sink.statuses[-1]["event"] == "stopped"


def test_lost_live_source_is_reconnected(tiny_bundle, tmp_path):  # noqa: F811
    path = str(tmp_path / "cam.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    writer.write(np.zeros((48, 64, 3), np.uint8))
    writer.release()
    sink = _Collect()
    source = CaptureSource(path, "cam", live=True)  # ends after 1 frame, like a camera that blinks
    pipeline = Pipeline([source], [cpu_worker(tiny_bundle)], {0: "c", 1: "s", 2: "t"}, [sink], Stats(), max_frames=2)
    pipeline.start()
    deadline = time.monotonic() + 5.0
    while pipeline.processed < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    pipeline.join()
    events = [s["event"] for s in sink.statuses]
    assert events[:3] == ["started", "source_lost", "source_reconnected"] and pipeline.processed == 2


def test_sinks_that_want_pictures_get_the_overlay_and_the_raw_frame_stays_clean(tiny_bundle):  # noqa: F811
    from app.outputs import overlay

    class Shown(_Collect):
        wants_image = True
    sink = Shown()
    worker = cpu_worker(tiny_bundle)
    pipeline = Pipeline([open_source("synthetic:160x120@0")], [worker], {0: "c", 1: "s", 2: "t"}, [sink], Stats(),
                        max_frames=3, hud=lambda stats: "hud", draw=overlay.draw_result)
    pipeline.run()
    assert len(sink.results) == 3
    for result in sink.results:
        assert result.image is not result.raw and result.image.shape == result.raw.shape == (120, 160, 3)
        expected = result.raw.copy()
        overlay.draw_result(expected, result, "hud")
        np.testing.assert_array_equal(result.image, expected)
        assert (result.image != result.raw).any(axis=2).mean() > 0.01


def test_a_result_is_not_held_back_waiting_for_the_next_frame(tiny_bundle):  # noqa: F811
    # The inference thread hands a result on just before the next frame's invoke, or at once
    # when no frame waits: a camera that goes quiet after one frame still gets it reported.
    sink = _Collect()
    second = threading.Event()

    class Quiet(object):
        live, name = True, "quiet"

        def __init__(self):
            self.sent = 0

        def read(self):
            if self.sent == 1:
                second.wait(10.0)
            if self.sent == 2:
                return None  # two frames in all, so none overwrites the second in its slot
            self.sent += 1
            return _frame(self.sent, 120, 160), self.name

        def reopen(self):
            return True

        def close(self):
            second.set()

    pipeline = Pipeline([Quiet()], [cpu_worker(tiny_bundle)], {0: "c", 1: "s", 2: "t"}, [sink], Stats(), max_frames=2)
    pipeline.start()
    deadline = time.monotonic() + 5.0
    while not sink.results and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [r.frame for r in sink.results] == [1]  # frame 2 has not even been read yet
    second.set()
    pipeline.wait()
    pipeline.join()
    assert [r.frame for r in sink.results] == [1, 2]
