"""Float-reference self-check on a real bundle with a deliberately broken int8 model.

The bundles (tests/app_support.py) are tests/tiny_bundle.py's real tiny bundle (real converter, real ai_edge_litert
interpreter) copied with sample images added. The broken model is made the way the user
made theirs: the same float network converted full-integer with raw 0..255 float32 images
as representative data, swapped in as model_int8.tflite. No Edge TPU here: the int8 model
on the CPU is the live model (nothing is mocked).

The tiny network is untrained: its random head gives 15 detections per sample (the
max_detections cap), all of them content-dependent, so agreement is measured on real,
non-empty detection sets (asserted below), not on two empty lists.
"""

import time

import numpy as np
import pytest

from app.check import diagnosis, reference
from app.inference import live_model, runtime
from app.capture import synthetic
from app.model.bundle import load_bundle
from app.errors import UserError
from app.model.postprocess import empty_detections

from app_support import NUM_SAMPLES, reference_bundles  # noqa: F401  (session fixture)
from tiny_bundle import tiny_bundle  # noqa: F401  (session fixture)


@pytest.fixture(scope="module")
def bundles(reference_bundles):  # noqa: F811
    """{"good": bundle dir with samples, "broken": the same with the raw-pixel int8 swapped in}."""
    return reference_bundles


def _thresholds(bundle):
    values = dict(bundle.postprocess)
    values["class_score_thresholds"] = None
    return values


def _live(bundle):
    """(Engine, Worker) of the int8 model on the CPU, wired as app.cli does it."""
    engine, key = runtime.open_bundle_engine(bundle, "cpu", "int8", "", 1)
    return engine, live_model.bundle_worker(engine, bundle, key, _thresholds(bundle))


class Recorder(object):
    """Collects emit(event, **fields) calls and callback invocations."""

    def __init__(self):
        self.events, self.fallbacks, self.exits = [], [], []

    def emit(self, event, **fields):
        self.events.append(dict(fields, event=event))

    def named(self, event):
        return [e for e in self.events if e["event"] == event]


class FakeClock(object):
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def _checker(bundle, rec, clock=None, **kwargs):
    _, ref = reference.open_float_worker(bundle, _thresholds(bundle), num_threads=1)
    kwargs.setdefault("on_fallback", rec.fallbacks.append)
    kwargs.setdefault("on_exit", rec.exits.append)
    return reference.ReferenceChecker(ref, rec.emit, "test cause", clock=clock or FakeClock(), **kwargs)


# ---------------------------------------------------------------------------- start-up check


def test_good_int8_agrees_with_float_on_samples(bundles):
    bundle = load_bundle(bundles["good"])
    _, live = _live(bundle)
    _, ref = reference.open_float_worker(bundle, _thresholds(bundle))
    images = [image for _, image in reference.load_samples(bundle)]
    result = reference.startup_check(live, ref, images)
    print("good int8 vs float on samples:", result)
    assert result.frames == NUM_SAMPLES
    assert result.reference >= NUM_SAMPLES  # the float model detects something on every sample
    assert result.agreement >= 0.9  # measured 0.95 (57 of 60 matched) for the properly calibrated model


def test_broken_int8_is_caught_at_start_and_falls_back_to_float(bundles):
    bundle = load_bundle(bundles["broken"])
    engine, live = _live(bundle)
    rec = Recorder()
    state = {"live": live}

    def fallback(fields):
        rec.fallbacks.append(fields)
        state["live"] = reference.open_float_worker(bundle, _thresholds(bundle), num_threads=2)[1]

    cause = reference.cause_for(bundle, engine, "int8")
    _, ref = reference.open_float_worker(bundle, _thresholds(bundle), num_threads=1)
    checker = reference.ReferenceChecker(ref, rec.emit, cause, min_agreement=0.6, patience=3,
                                         on_mismatch="fallback", on_fallback=fallback, clock=FakeClock())
    samples = reference.load_samples(bundle)
    result = checker.run_startup(live, samples)
    print("raw-pixel int8 vs float on samples:", result)

    assert result.reference >= NUM_SAMPLES and result.live > 0
    assert result.agreement < 0.3  # measured 0.13 (min_agreement 0.6): garbage, as the user saw
    check = rec.named("reference_check")[0]
    assert check["source"] == "samples" and check["agreement"] == pytest.approx(result.agreement, abs=1e-4)
    assert "maps 0..255 to [0, 255] but the float model expects [-1, 1]" in check["cause"]
    assert "calibrated with raw pixels" in cause and "differs from model.json's" in cause
    assert "edgedet-train doctor --float" in cause and "--images" in cause
    assert len(rec.fallbacks) == 1 and rec.named("fallback")[0]["to"] == "float"
    assert checker.fired == "fallback" and not checker.active
    assert not checker.offer(samples[0][1], empty_detections(), "cam")  # no more checks after fallback

    # After the fallback the live path is the float model: its detections are the float model's.
    assert state["live"].model == "float"
    frames = [image for _, image in samples] + [synthetic.render_scene(np.random.RandomState(4), 200, 260)[0]]
    for image in frames:
        got, want = reference.detect(state["live"], image), reference.detect(ref, image)
        assert len(want.scores) > 0
        np.testing.assert_array_equal(got.class_ids, want.class_ids)
        np.testing.assert_allclose(got.boxes, want.boxes, atol=1e-5)
        np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)


def test_startup_without_samples_is_reported_not_failed(bundles):
    bundle = load_bundle(bundles["good"])
    rec = Recorder()
    checker = _checker(bundle, rec)
    assert checker.run_startup(_live(bundle)[1], []) is None
    assert rec.named("reference_check")[0]["skipped"] == "no sample images"
    assert rec.fallbacks == [] and checker.active


# ---------------------------------------------------------------------------- periodic checks


def _frames(count, seed=2):
    rng = np.random.RandomState(seed)
    return [synthetic.render_scene(rng, 180, 240)[0] for _ in range(count)]


def test_thread_samples_at_most_once_per_interval(bundles):
    bundle = load_bundle(bundles["good"])
    rec, clock = Recorder(), FakeClock()
    checker = _checker(bundle, rec, clock, interval_s=5.0)
    _, ref = reference.open_float_worker(bundle, _thresholds(bundle))
    frames = _frames(3)
    checker.start()
    try:
        taken = []
        for step in range(23):  # t = 0, 0.5, ..., 11 s
            clock.now = step * 0.5
            frame = frames[step % len(frames)]
            if checker.offer(frame, reference.detect(ref, frame), "cam0"):
                taken.append(clock.now)
                assert checker.wait_idle(30.0)
    finally:
        assert checker.join(2.0)
    assert taken == [5.0, 10.0]
    checks = rec.named("reference_check")
    assert [c["source"] for c in checks] == ["cam0", "cam0"]
    assert all(c["agreement"] == 1.0 and c["reference_detections"] > 0 for c in checks)
    assert rec.fallbacks == [] and checker.low_streak == 0


def test_offer_is_constant_time_when_no_sample_is_due(bundles):
    class Untouchable(object):
        def __array__(self, *args):
            raise AssertionError("offer() touched the frame although no sample was due")

    rec, clock = Recorder(), FakeClock()
    checker = _checker(load_bundle(bundles["good"]), rec, clock, interval_s=10.0)
    frame, dets = Untouchable(), empty_detections()
    t0 = time.perf_counter()
    for _ in range(20000):
        assert not checker.offer(frame, dets, "cam")
    per_call = (time.perf_counter() - t0) / 20000
    print("offer() when no sample is due: {:.2f} us".format(per_call * 1e6))
    assert per_call < 50e-6  # measured ~0.5 us; generous for a loaded 2-core box


def _low_and_good(bundle, checker, rec, lows, goods=0):
    """Runs `lows` checks with no live detections (agreement 0), then `goods` matching ones."""
    _, ref = reference.open_float_worker(bundle, _thresholds(bundle))
    frame = _frames(1, seed=9)[0]
    for _ in range(lows):
        checker.check(frame, empty_detections(), "cam")
    for _ in range(goods):
        checker.check(frame, reference.detect(ref, frame), "cam")


def test_patience_then_warn_keeps_checking(bundles):
    bundle = load_bundle(bundles["good"])
    rec = Recorder()
    checker = _checker(bundle, rec, on_mismatch="warn", patience=2)
    _low_and_good(bundle, checker, rec, lows=1)
    assert rec.named("reference_mismatch") == [] and checker.low_streak == 1
    _low_and_good(bundle, checker, rec, lows=1, goods=1)
    warn = rec.named("reference_mismatch")
    assert len(warn) == 1 and warn[0]["action"] == "warn" and warn[0]["cause"] == "test cause"
    lows = [c for c in rec.named("reference_check") if c["agreement"] == 0.0]
    assert [c["low_streak"] for c in lows] == [1, 2] and all(c["cause"] == "test cause" for c in lows)
    assert rec.named("reference_check")[-1]["agreement"] == 1.0 and checker.low_streak == 0
    assert checker.active and rec.fallbacks == [] and rec.exits == []


def test_a_good_check_resets_patience_before_fallback(bundles):
    bundle = load_bundle(bundles["good"])
    rec = Recorder()
    checker = _checker(bundle, rec, on_mismatch="fallback", patience=3)
    _low_and_good(bundle, checker, rec, lows=2, goods=1)
    _low_and_good(bundle, checker, rec, lows=2)
    assert rec.fallbacks == [] and checker.low_streak == 2
    _low_and_good(bundle, checker, rec, lows=1)
    assert len(rec.fallbacks) == 1 and rec.fallbacks[0]["agreement"] == 0.0
    assert len(rec.named("fallback")) == 1 and not checker.active and rec.exits == []


def test_exit_action_requests_exit_once(bundles):
    bundle = load_bundle(bundles["good"])
    rec = Recorder()
    checker = _checker(bundle, rec, on_mismatch="exit", patience=1)
    _low_and_good(bundle, checker, rec, lows=1)
    assert len(rec.exits) == 1 and rec.exits[0]["action"] == "exit"
    assert checker.fired == "exit" and not checker.active and rec.fallbacks == []


def test_thread_drives_fallback_through_offer(bundles):
    bundle = load_bundle(bundles["good"])
    rec, clock = Recorder(), FakeClock()
    checker = _checker(bundle, rec, clock, interval_s=1.0, patience=2)
    frame = _frames(1, seed=5)[0]
    checker.start()
    try:
        for step in range(1, 6):
            clock.now = float(step)
            if checker.offer(frame, empty_detections(), "cam1"):
                assert checker.wait_idle(30.0)
    finally:
        assert checker.join(2.0)
    assert len(rec.named("reference_check")) == 2  # fallback after the 2nd low check ends the checking
    assert len(rec.fallbacks) == 1 and rec.fallbacks[0]["source"] == "cam1"


@pytest.mark.parametrize("kwargs, match", [
    (dict(interval_s=0), "interval_s"), (dict(min_agreement=1.5), "min_agreement"),
    (dict(patience=0), "patience"), (dict(on_mismatch="panic"), "on_mismatch"),
])
def test_bad_settings_are_user_errors(bundles, kwargs, match):
    with pytest.raises(UserError, match=match):
        _checker(load_bundle(bundles["good"]), Recorder(), **kwargs)


# ---------------------------------------------------------------------------- cause naming


def test_cause_names_the_raw_pixel_input_range():
    text = diagnosis.input_range_cause("uint8", 1.0, 0, (-1.0, 1.0))
    assert ("the uint8 model's input quantization (scale 1, zero point 0) maps 0..255 to [0, 255] but the "
            "float model expects [-1, 1]: it was calibrated with raw pixels") in text
    assert diagnosis.input_range_cause("uint8", 2 / 255, 128, (-1.0, 1.0)) == ""
    assert diagnosis.input_range_cause("uint8", 2 / 255, 127, (-1.0, 1.0)) == ""
    assert diagnosis.input_range_cause("int8", 2 / 255, 0, (-1.0, 1.0)) == ""
    assert diagnosis.input_range_cause("float32", 0.0, 0, (-1.0, 1.0)) == ""
    other = diagnosis.input_range_cause("uint8", 1 / 255, 0, (-1.0, 1.0))
    assert "maps 0..255 to [0, 1]" in other and "not preprocessed like training" in other


def test_mapped_range_numbers():
    low, high = diagnosis.mapped_range(2 / 255, 128)
    assert low == pytest.approx(-1.0039, abs=1e-4) and high == pytest.approx(0.9961, abs=1e-4)
    assert diagnosis.mapped_range(2 / 255, 0, "int8") == pytest.approx((-1.0039, 0.9961), abs=1e-4)
    with pytest.raises(ValueError, match="scale > 0"):
        diagnosis.mapped_range(0.0, 0)


def test_cause_when_input_quantization_fits():
    text = diagnosis.likely_cause("uint8", 2 / 255, 128, (-1.0, 1.0), "edgetpu", recorded=(2 / 255, 128))
    assert "loss is inside the network" in text and "recompile" in text
    swapped = diagnosis.likely_cause("uint8", 2 / 255, 128, (-1.0, 1.0), "int8", recorded=(0.5, 3))
    assert swapped.startswith("the int8 model file is not the one export checked")
